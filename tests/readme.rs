//! The README's examples are commands this binary takes: every `infra …`
//! command in its `sh` blocks and its inline examples (the command tables)
//! parses with the real command-line definition (flags, values,
//! subcommands), so the README and the CLI cannot drift apart silently. The
//! quickstart's commands are run for real by `tests/dev_mode.rs`
//! (`the_quickstart_works_as_written` runs its "Then, as an admin" block).

/// The words of one `infra …` command, without redirections; `None` for
/// anything else, and for a synopsis (`[--flag VALUE]`, `a | b`).
fn command_words(part: &str) -> Option<Vec<String>> {
    let words = shlex::split(part.trim())?;
    if words.first().map(String::as_str) != Some("infra") {
        return None;
    }
    if words
        .iter()
        .any(|w| w.starts_with('[') || w.contains('|') || w.contains('…'))
    {
        return None;
    }
    let mut args = Vec::new();
    let mut skip = false;
    for w in words {
        if skip {
            skip = false;
            continue;
        }
        match w.as_str() {
            ">" | ">>" | "<" | "2>" => skip = true,
            w if w.starts_with('>') || w.starts_with('<') || w.starts_with("2>") => {}
            _ => args.push(w),
        }
    }
    Some(args)
}

/// The README's `infra …` commands with their line numbers: `sh` blocks
/// (continuations joined, `&&`, `;` and pipes taken apart) and inline spans.
fn readme_commands() -> Vec<(usize, bool, Vec<String>)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut out = Vec::new();
    let mut in_block = false;
    let mut in_sh = false;
    let mut pending = String::new();
    let mut start = 0;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            in_block = !in_block;
            in_sh = in_block && (trimmed == "```sh" || trimmed == "```bash");
            continue;
        }
        if !in_block {
            for (k, span) in line.split('`').enumerate() {
                if k % 2 == 1
                    && span.starts_with("infra ")
                    && let Some(args) = command_words(&span.replace("\\|", "|"))
                    // `infra help COMMAND`: a placeholder, not a command.
                    && !args.iter().any(|a| a == "COMMAND")
                {
                    out.push((i + 1, false, args));
                }
            }
            continue;
        }
        if !in_sh {
            continue;
        }
        if pending.is_empty() {
            start = i + 1;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let full = std::mem::take(&mut pending);
        for part in full
            .split("&&")
            .flat_map(|p| p.split(';'))
            .flat_map(|p| p.split(" | "))
        {
            if let Some(args) = command_words(part) {
                out.push((start, true, args));
            }
        }
    }
    out
}

#[test]
fn every_infra_command_in_the_readme_parses() {
    let commands = readme_commands();
    assert!(
        commands.len() > 80,
        "the README's commands were found ({} of them)",
        commands.len()
    );
    let mut failures = Vec::new();
    for (line, whole, args) in &commands {
        // As the binary reads them: `--server`/`--format` anywhere.
        let args = infra::cli::hoist_global_flags(args.iter().map(Into::into).collect());
        match infra::cli::command().try_get_matches_from(&args) {
            Ok(_) => {}
            // Prose names a command and some of its flags, not all it needs.
            Err(e)
                if !whole
                    && matches!(
                        e.kind(),
                        clap::error::ErrorKind::MissingRequiredArgument
                            | clap::error::ErrorKind::MissingSubcommand
                            | clap::error::ErrorKind::InvalidValue
                    ) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    clap::error::ErrorKind::DisplayHelp
                        | clap::error::ErrorKind::DisplayVersion
                        | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                ) => {}
            Err(e) => failures.push(format!(
                "README.md:{line}: {}\n  {}",
                args.iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" "),
                e.render().to_string().lines().next().unwrap_or_default()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
