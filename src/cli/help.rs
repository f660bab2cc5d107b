//! `infra --help` lists the commands in groups, like kubectl and gh do.
//!
//! clap prints every subcommand in one "Commands:" block and has no notion of
//! command groups, so the top-level help uses a template whose command list
//! is written here from the clap definition itself (names and one-line
//! helps), in the groups of [`GROUPS`]. Only the top-level help changes:
//! `infra help COMMAND`, `infra COMMAND --help`, the man pages and the
//! completions come from clap as usual.

use clap::Command;

/// The groups of `infra --help`, in order. A command missing here still
/// shows, at the end of the last group (a test keeps the lists complete).
pub const GROUPS: &[(&str, &[&str])] = &[
    (
        "Core commands",
        &[
            "login", "logout", "status", "whoami", "list", "use", "tokens",
        ],
    ),
    (
        "Management commands",
        &[
            "users",
            "groups",
            "grants",
            "access",
            "destinations",
            "keys",
            "providers",
            "identities",
            "sessions",
            "audit",
        ],
    ),
    (
        "Other commands",
        &["server", "connector", "completion", "version", "help"],
    ),
];

/// The help line of clap's own `help` subcommand.
const HELP_ABOUT: &str = "Show this help, or the help of a command (infra help COMMAND)";

/// Where command lines are wrapped (the help of clap wraps at the terminal,
/// at most 100 columns; a fixed width keeps this block predictable).
const WIDTH: usize = 80;

/// The top-level command with its grouped help.
pub fn grouped(cmd: Command) -> Command {
    let styles = cmd.get_styles().clone();
    let header = styles.get_header();
    let literal = styles.get_literal();
    let mut commands: Vec<(String, String)> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| {
            let about = s.get_about().map(|a| a.to_string()).unwrap_or_default();
            (s.get_name().to_string(), about)
        })
        .collect();
    if !cmd.is_disable_help_subcommand_set() {
        commands.push(("help".to_string(), HELP_ABOUT.to_string()));
    }
    let name_width = commands.iter().map(|(n, _)| n.len()).max().unwrap_or(0);

    let mut groups: Vec<(&str, Vec<&(String, String)>)> = GROUPS
        .iter()
        .map(|(title, names)| {
            let members = names
                .iter()
                .filter_map(|n| commands.iter().find(|(name, _)| name == n))
                .collect();
            (*title, members)
        })
        .collect();
    let ungrouped = commands.iter().filter(|(name, _)| {
        !GROUPS
            .iter()
            .any(|(_, names)| names.contains(&name.as_str()))
    });
    if let Some((_, last)) = groups.last_mut() {
        last.extend(ungrouped);
    }

    let mut text = String::new();
    for (title, members) in groups.iter().filter(|(_, m)| !m.is_empty()) {
        text.push_str(&format!(
            "{}{title}:{}\n",
            header.render(),
            header.render_reset()
        ));
        for (name, about) in members {
            let pad = " ".repeat(name_width - name.len());
            let about = wrap(about, WIDTH - name_width - 4, name_width + 4);
            text.push_str(&format!(
                "  {}{name}{}{pad}  {about}\n",
                literal.render(),
                literal.render_reset()
            ));
        }
        text.push('\n');
    }
    // The template language uses braces; command helps must not.
    let text = text.replace(['{', '}'], "");
    let template = format!(
        "{{before-help}}{{about-with-newline}}\n{{usage-heading}} {{usage}}\n\n{text}{}Options:{}\n{{options}}{{after-help}}",
        header.render(),
        header.render_reset()
    );
    cmd.help_template(template)
}

/// Wraps `text` at `width` columns, indenting continuation lines by `indent`.
fn wrap(text: &str, width: usize, indent: usize) -> String {
    let mut out = String::new();
    let mut line_len = 0;
    for word in text.split_whitespace() {
        if line_len > 0 && line_len + 1 + word.len() > width {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            line_len = 0;
        } else if line_len > 0 {
            out.push(' ');
            line_len += 1;
        }
        out.push_str(word);
        line_len += word.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_is_in_exactly_one_group() {
        let cmd = super::super::command();
        let mut names: Vec<String> = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| s.get_name().to_string())
            .collect();
        names.push("help".to_string());
        for name in &names {
            let n = GROUPS
                .iter()
                .filter(|(_, members)| members.contains(&name.as_str()))
                .count();
            assert_eq!(
                n, 1,
                "`infra {name}` is in {n} groups of src/cli/help.rs GROUPS: put it in one"
            );
        }
        for (_, members) in GROUPS {
            for m in *members {
                assert!(
                    names.iter().any(|n| n == m),
                    "GROUPS names `{m}`, which is not a command"
                );
            }
        }
    }

    #[test]
    fn long_helps_wrap_under_their_column() {
        let w = wrap("one two three four", 9, 4);
        assert_eq!(w, "one two\n    three\n    four");
    }
}
