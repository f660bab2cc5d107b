//! Shell completions and man pages, generated from the one clap definition
//! ([`super::command`]) so they never drift from the code.
//!
//! `infra completion SHELL` prints a completion script. The same scripts and
//! a man page per command are committed under `completions/` and `man/`
//! (install.sh installs those); [`generated_files`] renders them all, and
//! `tests/ship.rs` fails when the committed copies are out of date. To
//! regenerate them: `INFRA_REGENERATE=1 cargo test --test ship generated_files`.

use std::io::Write;
use std::path::PathBuf;

use clap::ValueEnum;
use clap_complete::Generator;
pub use clap_complete::Shell;

/// Where the completion scripts and man pages live in the repository.
pub const COMPLETIONS_DIR: &str = "completions";
pub const MAN_DIR: &str = "man";

pub const AFTER_HELP: &str = "\
Load completions in the current shell, or install them for good:
  bash:        source <(infra completion bash)
               infra completion bash > ~/.local/share/bash-completion/completions/infra
  zsh:         infra completion zsh > \"${fpath[1]}/_infra\"
  fish:        infra completion fish > ~/.config/fish/completions/infra.fish
  PowerShell:  infra completion powershell | Out-String | Invoke-Expression
  elvish:      eval (infra completion elvish | slurp)

install.sh installs the bash, zsh and fish scripts (and the man pages) for you.";

#[derive(Debug, clap::Args)]
pub struct CompletionArgs {
    /// The shell to print the completion script for
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(args: CompletionArgs) -> anyhow::Result<()> {
    let script = completion(args.shell);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)?;
    out.flush()?;
    Ok(())
}

/// The completion script for one shell.
pub fn completion(shell: Shell) -> Vec<u8> {
    let mut cmd = super::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "infra", &mut out);
    out
}

/// Every generated file, as a path relative to the repository root and its
/// contents: `completions/<file per shell>` and `man/infra[-COMMAND…].1`.
pub fn generated_files() -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for shell in Shell::value_variants() {
        let path = PathBuf::from(COMPLETIONS_DIR).join(shell.file_name("infra"));
        files.push((path, completion(*shell)));
    }
    let mut cmd = super::command().disable_help_subcommand(true);
    cmd.build();
    man_pages(&cmd, None, &mut files);
    files.sort();
    files
}

/// A man page for `cmd` and for each of its (visible) subcommands.
fn man_pages(cmd: &clap::Command, parent: Option<&str>, files: &mut Vec<(PathBuf, Vec<u8>)>) {
    let name = cmd.get_display_name().unwrap_or(cmd.get_name());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, Some(name), files);
    }
    let man = clap_mangen::Man::new(cmd.clone())
        .manual("infra manual")
        .source(format!("infra {}", crate::api::version::CURRENT));
    let mut page = Vec::new();
    man.render(&mut page)
        .expect("rendering into memory does not fail");
    let mut page = String::from_utf8(page).expect("clap_mangen writes UTF-8");
    // clap_mangen heads the after-help "EXTRA"; ours holds examples.
    let heading = match cmd.get_after_help().map(|h| h.to_string()) {
        Some(h) if h.starts_with("Example") => "EXAMPLES",
        _ => "NOTES",
    };
    page = page.replace("\n.SH EXTRA\n", &format!("\n.SH {heading}\n"));
    // Each subcommand's page points back to its parent's.
    if let Some(parent) = parent {
        page.push_str(&format!(".SH \"SEE ALSO\"\n\\fB{parent}\\fR(1)\n"));
    }
    files.push((
        PathBuf::from(MAN_DIR).join(man.get_filename()),
        page.into_bytes(),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_per_command_and_subcommand() {
        let files = generated_files();
        let names: Vec<String> = files.iter().map(|(p, _)| p.display().to_string()).collect();
        for want in [
            "man/infra.1",
            "man/infra-login.1",
            "man/infra-users.1",
            "man/infra-users-add.1",
            "man/infra-identities-oidc-auth-set.1",
            "man/infra-completion.1",
            "completions/infra.bash",
            "completions/_infra",
            "completions/infra.fish",
            "completions/_infra.ps1",
            "completions/infra.elv",
        ] {
            assert!(names.iter().any(|n| n == want), "no {want} in {names:?}");
        }
        assert!(
            !names.iter().any(|n| n.contains("-help")),
            "no page for clap's help subcommand: {names:?}"
        );
    }
}
