//! What a person gets when they install infra: `install.sh` (into a temp
//! prefix, with the binary cargo test built), the man pages and completions
//! it installs and that are committed under `man/` and `completions/` (they
//! must match the clap definition), the grouped `infra --help`, `infra
//! version`, and how a CLI and a server of different versions tell the
//! person which one to upgrade.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{ADMIN_KEY, Backend, Machine, Server, VERSION};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn describe(o: &Output) -> String {
    format!(
        "{:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    )
}

// ------------------------------------------------------------------ install.sh

/// Every path under `root` (files and directories), relative, with each
/// file's contents, so "as it was" means the same names and the same bytes.
fn tree(root: &Path) -> BTreeSet<(String, Option<Vec<u8>>)> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if p.is_dir() {
                out.insert((rel + "/", None));
                stack.push(p);
            } else {
                out.insert((rel, Some(std::fs::read(&p).unwrap())));
            }
        }
    }
    out
}

fn install_sh(prefix: &Path, home: &Path, args: &[&str]) -> Output {
    let out = Command::new("bash")
        .arg(repo().join("install.sh"))
        .arg("--prefix")
        .arg(prefix)
        .args(args)
        .env("INFRA_INSTALL_BINARY", common::bin())
        .env("HOME", home)
        .env("SHELL", "/bin/bash")
        .env_remove("PREFIX")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install.sh {args:?}: {}",
        describe(&out)
    );
    out
}

#[test]
fn install_sh_installs_and_uninstalls_exactly_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("prefix");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    // A prefix that already holds other programs' files, some in the
    // directories infra installs into.
    for (path, content) in [
        ("bin/kubectl", "#!/bin/sh\n"),
        ("share/man/man1/kubectl.1", ".TH KUBECTL 1\n"),
        ("share/zsh/other", "x"),
    ] {
        let p = prefix.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    let before = tree(&prefix);

    let out = install_sh(&prefix, &home, &[]);
    let said = text(&out.stderr);
    assert!(
        said.contains(&format!("Installed infra {VERSION}")),
        "it says what it installed: {said}"
    );
    let bin_dir = prefix.join("bin").display().to_string();
    assert!(
        said.contains(&format!("{bin_dir} is not on your PATH"))
            && said.contains(&format!("export PATH=\"{bin_dir}:$PATH\"")),
        "it says how to put the bin dir on PATH: {said}"
    );
    for f in [
        "bin/infra",
        "bin/infra-credential",
        "share/man/man1/infra.1",
        "share/man/man1/infra-login.1",
        "share/man/man1/infra-users-add.1",
        "share/bash-completion/completions/infra",
        "share/zsh/site-functions/_infra",
        "share/fish/vendor_completions.d/infra.fish",
        "share/infra/install-manifest",
    ] {
        assert!(prefix.join(f).is_file(), "{f} is installed: {said}");
    }

    // The installed binary runs.
    let infra = prefix.join("bin/infra");
    let out = Command::new(&infra)
        .arg("version")
        .env("HOME", &home)
        .env("INFRA_HOME", home.join(".config/infra"))
        .env_remove("INFRA_SERVER")
        .env_remove("INFRA_ACCESS_KEY")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(text(&out.stdout), format!("Client: {VERSION}\n"));

    // man renders the page.
    let out = Command::new("man")
        .arg("-l")
        .arg(prefix.join("share/man/man1/infra.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .expect("man (man-db) is installed: tests/run.sh installs it");
    assert!(out.status.success(), "man -l: {}", describe(&out));
    let page = strip_overstrike(&text(&out.stdout));
    for want in ["NAME", "SYNOPSIS", "infra login", "infra-login(1)"] {
        assert!(page.contains(want), "man infra shows {want:?}:\n{page}");
    }

    // bash loads the completion, and it completes.
    let completion = prefix.join("share/bash-completion/completions/infra");
    let out = Command::new("bash")
        .arg("-c")
        .arg(
            r#"source "$1" && complete -p infra &&
               COMP_WORDS=(infra us) COMP_CWORD=1 COMP_LINE="infra us" COMP_POINT=8 &&
               _infra infra us infra && printf 'reply: %s\n' "${COMPREPLY[@]}""#,
        )
        .arg("bash")
        .arg(&completion)
        .output()
        .unwrap();
    assert!(out.status.success(), "bash completion: {}", describe(&out));
    let shown = text(&out.stdout);
    assert!(
        shown.starts_with("complete ") && shown.contains("-F _infra") && shown.contains(" infra\n"),
        "complete -p infra: {shown}"
    );
    assert!(
        shown.contains("reply: users") && shown.contains("reply: use"),
        "`infra us<TAB>` offers users and use: {shown}"
    );

    // Running it again is fine, and leaves the same files.
    let installed = tree(&prefix);
    install_sh(&prefix, &home, &[]);
    assert_eq!(tree(&prefix), installed, "a second install changes nothing");

    // An upgrade removes what an earlier install had and this one has not.
    let manifest = prefix.join("share/infra/install-manifest");
    let gone = prefix.join("share/man/man1/infra-gone.1");
    std::fs::write(&gone, "old page").unwrap();
    let mut m = std::fs::read_to_string(&manifest).unwrap();
    m.push_str("f share/man/man1/infra-gone.1\n");
    std::fs::write(&manifest, m).unwrap();
    install_sh(&prefix, &home, &[]);
    assert!(!gone.exists(), "the stale page of an older install is gone");
    assert_eq!(tree(&prefix), installed);

    // --uninstall leaves the prefix as it was; twice is fine.
    let out = install_sh(&prefix, &home, &["--uninstall"]);
    assert!(
        text(&out.stderr).contains("Uninstalled infra"),
        "{}",
        describe(&out)
    );
    let after = tree(&prefix);
    let names = |t: &BTreeSet<(String, Option<Vec<u8>>)>| -> Vec<String> {
        t.iter().map(|(p, _)| p.clone()).collect()
    };
    assert_eq!(
        names(&after),
        names(&before),
        "--uninstall leaves exactly the files that were there before"
    );
    assert_eq!(after, before, "and their contents");
    let out = install_sh(&prefix, &home, &["--uninstall"]);
    assert!(
        text(&out.stderr).contains("Nothing to uninstall"),
        "{}",
        describe(&out)
    );
}

#[test]
fn install_sh_into_a_new_prefix_and_out_again_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("new/prefix");
    install_sh(&prefix, tmp.path(), &[]);
    assert!(prefix.join("bin/infra").is_file());
    install_sh(&prefix, tmp.path(), &["--uninstall"]);
    assert!(
        !prefix.exists(),
        "the prefix the install created is removed: {:?}",
        tree(&prefix)
    );
}

#[test]
fn install_sh_is_shellcheck_clean() {
    let out = match Command::new("shellcheck")
        .arg(repo().join("install.sh"))
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!("shellcheck is needed for this test: {e}"),
    };
    assert!(
        out.status.success(),
        "shellcheck install.sh: {}",
        describe(&out)
    );
}

/// `man` without a terminal may still print bold as "X\bX".
fn strip_overstrike(s: &str) -> String {
    let mut out: Vec<char> = Vec::new();
    for c in s.chars() {
        if c == '\u{8}' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out.into_iter().collect()
}

// ------------------------------------------------------------------ generated files

const REGENERATE: &str = "INFRA_REGENERATE=1 cargo test --test ship generated_files";

#[test]
fn generated_files_are_up_to_date() {
    use infra::cli::completion::{COMPLETIONS_DIR, MAN_DIR, generated_files};
    let root = repo();
    let want = generated_files();
    let mut committed = BTreeSet::new();
    for dir in [COMPLETIONS_DIR, MAN_DIR] {
        if let Ok(rd) = std::fs::read_dir(root.join(dir)) {
            for e in rd.flatten() {
                committed.insert(Path::new(dir).join(e.file_name()));
            }
        }
    }

    if std::env::var("INFRA_REGENERATE").as_deref() == Ok("1") {
        for stale in committed
            .iter()
            .filter(|p| !want.iter().any(|(w, _)| w == *p))
        {
            std::fs::remove_file(root.join(stale)).unwrap();
        }
        for (path, content) in &want {
            std::fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
            std::fs::write(root.join(path), content).unwrap();
        }
        eprintln!(
            "rewrote {} files under {COMPLETIONS_DIR}/ and {MAN_DIR}/",
            want.len()
        );
        return;
    }

    let mut problems = Vec::new();
    for (path, content) in &want {
        match std::fs::read(root.join(path)) {
            Ok(c) if &c == content => {}
            Ok(_) => problems.push(format!("{} differs", path.display())),
            Err(_) => problems.push(format!("{} is missing", path.display())),
        }
    }
    for extra in committed
        .iter()
        .filter(|p| !want.iter().any(|(w, _)| w == *p))
    {
        problems.push(format!(
            "{} is not generated any more (a command went away?)",
            extra.display()
        ));
    }
    assert!(
        problems.is_empty(),
        "the committed completions and man pages are out of date with the clap definition:\n  \
         {}\nRegenerate them with `{REGENERATE}` and commit the result.",
        problems.join("\n  ")
    );
}

#[test]
fn completion_prints_the_committed_scripts() {
    for (shell, file) in [
        ("bash", "infra.bash"),
        ("zsh", "_infra"),
        ("fish", "infra.fish"),
        ("powershell", "_infra.ps1"),
        ("elvish", "infra.elv"),
    ] {
        let out = Machine::new().run(&["completion", shell]);
        assert!(out.status.success(), "{}", describe(&out));
        assert!(out.stderr.is_empty(), "stdout only: {}", describe(&out));
        let committed = std::fs::read(repo().join("completions").join(file))
            .unwrap_or_else(|e| panic!("completions/{file}: {e}; run `{REGENERATE}`"));
        assert!(
            out.stdout == committed,
            "`infra completion {shell}` differs from completions/{file}: run `{REGENERATE}`"
        );
    }
    let out = Machine::new().run(&["completion", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("possible values"),
        "{}",
        describe(&out)
    );
}

// ------------------------------------------------------------------ help

#[test]
fn help_groups_the_commands_like_kubectl() {
    let m = Machine::new();
    for args in [&["--help"][..], &["-h"], &["help"]] {
        let out = m.run(args);
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
        let help = text(&out.stdout);
        let section = |title: &str| -> Vec<String> {
            let start = help
                .find(&format!("{title}:\n"))
                .unwrap_or_else(|| panic!("infra {args:?} has a {title} section:\n{help}"));
            help[start..]
                .lines()
                .skip(1)
                .take_while(|l| !l.trim().is_empty())
                .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
                .map(|l| l.split_whitespace().next().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            section("Core commands"),
            [
                "login", "logout", "status", "whoami", "list", "use", "tokens"
            ],
            "{help}"
        );
        assert_eq!(
            section("Management commands"),
            [
                "users",
                "groups",
                "grants",
                "access",
                "destinations",
                "keys",
                "providers",
                "identities",
                "sessions",
                "audit"
            ],
            "{help}"
        );
        assert_eq!(
            section("Other commands"),
            ["server", "connector", "completion", "version", "help"],
            "{help}"
        );
        assert!(help.contains("Options:\n"), "{help}");
        assert!(!help.contains("\nCommands:\n"), "no ungrouped list: {help}");
        assert!(
            help.lines().all(|l| l.chars().count() <= 100),
            "lines fit a terminal:\n{help}"
        );
    }
    // The help of one command is still clap's.
    let out = m.run(&["help", "users"]);
    assert!(out.status.success(), "{}", describe(&out));
    let help = text(&out.stdout);
    assert!(
        help.contains("Manage users") && help.contains("Commands:\n") && help.contains("add"),
        "{help}"
    );
    let out = m.run(&["help", "grants", "add"]);
    assert!(
        text(&out.stdout).contains("Examples:"),
        "{}",
        describe(&out)
    );
}

#[test]
fn every_command_and_flag_has_a_help_line_and_every_command_an_example() {
    fn walk(cmd: &clap::Command, path: &str, gaps: &mut Vec<String>) {
        for a in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            let id = a.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            if a.get_help().is_none_or(|h| h.to_string().trim().is_empty()) {
                gaps.push(format!("`{path}`: the argument {id} has no help"));
            }
        }
        for s in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let p = format!("{path} {}", s.get_name());
            if s.get_about().is_none() {
                gaps.push(format!("`{p}` has no one-line help"));
            }
            let after = s
                .get_after_help()
                .or(s.get_after_long_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            if !s.has_subcommands() && !after.contains(&p) {
                gaps.push(format!("`{p}` has no example (after_help showing `{p} …`)"));
            }
            walk(s, &p, gaps);
        }
    }
    let mut gaps = Vec::new();
    walk(&infra::cli::command(), "infra", &mut gaps);
    assert!(gaps.is_empty(), "help gaps:\n  {}", gaps.join("\n  "));
}

// ------------------------------------------------------------------ version

#[test]
fn version_without_login_prints_the_cli_version() {
    let m = Machine::new();
    let out = m.run(&["version"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(text(&out.stdout), format!("Client: {VERSION}\n"));
    assert!(
        text(&out.stderr).contains("Not logged in"),
        "{}",
        describe(&out)
    );

    let out = m.run(&["version", "--format", "json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!({"clientVersion": VERSION}));

    let out = m.run(&["--version"]);
    assert_eq!(text(&out.stdout), format!("infra {VERSION}\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_when_logged_in_shows_the_server_too() {
    let s = Server::start(Backend::Sqlite).await;
    let host = s.url.trim_start_matches("https://").to_string();
    let m = Machine::new();
    let out = m.run(&[
        "login",
        &host,
        "--key",
        ADMIN_KEY,
        "--tls-trusted-fingerprint",
        &s.fingerprint(),
    ]);
    assert!(out.status.success(), "{}", describe(&out));

    let out = m.run(&["version"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        text(&out.stdout),
        format!("Client: {VERSION}\nServer: {VERSION} ({host})\n")
    );

    let out = m.run(&["version", "--format", "json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"clientVersion": VERSION, "server": host, "serverVersion": VERSION})
    );
}

// ------------------------------------------------------------------ version skew

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refuses_a_skewed_client_naming_both_versions() {
    let s = Server::start(Backend::Sqlite).await;
    let newer = next_major(VERSION);
    for (client, want) in [
        (newer.as_str(), "upgrade the server"),
        ("latest", "is not a version"),
    ] {
        let resp = s
            .client
            .get(format!("{}/api/version", s.url))
            .header("Infra-Version", client)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "Infra-Version: {client}");
        let body: Value = resp.json().await.unwrap();
        let msg = body["message"].as_str().unwrap();
        assert!(msg.contains(client) && msg.contains(VERSION), "{msg}");
        assert!(msg.contains(want), "{msg}");
    }
    let resp = s
        .client
        .get(format!("{}/api/version", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("Infra-Version"),
        "{body}"
    );
}

/// `MAJOR+1.0.0`.
fn next_major(v: &str) -> String {
    let major: u64 = v.split('.').next().unwrap().parse().unwrap();
    format!("{}.0.0", major + 1)
}

/// A version the server check takes as older than this CLI, if there is one.
fn older(v: &str) -> Option<String> {
    let mut parts = v.split('.').map(|p| p.parse::<u64>().unwrap());
    let (major, minor) = (parts.next().unwrap(), parts.next().unwrap());
    if minor > 0 {
        Some(format!("{major}.{}.0", minor - 1))
    } else if major > 0 {
        Some(format!("{}.99.0", major - 1))
    } else {
        None
    }
}

/// An HTTPS server that answers every request the way an infra server of
/// `version` answers a client of another version it cannot serve.
async fn fake_server(version: &'static str) -> (String, axum_server::Handle<std::net::SocketAddr>) {
    use axum::http::{HeaderMap, StatusCode};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
        cert.pem().into_bytes(),
        key.serialize_pem().into_bytes(),
    )
    .await
    .unwrap();
    let app = axum::Router::new().fallback(move |headers: HeaderMap| async move {
        let client = headers
            .get("Infra-Version")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let skew = infra::api::version::check(client.as_deref(), version)
            .expect_err("the fake server is skewed from the CLI");
        let body = serde_json::json!({"code": 400, "message": skew.to_string()});
        (StatusCode::BAD_REQUEST, axum::Json(body))
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = axum_server::Handle::new();
    let server = axum_server::from_tcp_rustls(listener, tls)
        .unwrap()
        .handle(handle.clone());
    tokio::spawn(server.serve(app.into_make_service()));
    (format!("127.0.0.1:{}", addr.port()), handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_says_which_side_to_upgrade() {
    let newer: &'static str = next_major(VERSION).leak();
    // A newer server: upgrade the CLI, and how. An older one: upgrade it.
    let mut cases = vec![(newer, "upgrade the CLI to", Some("./install.sh"))];
    if let Some(old) = older(VERSION) {
        cases.push((old.leak(), "upgrade the server to", None));
    }
    for (server_version, want, hint) in cases {
        let (host, handle) = fake_server(server_version).await;
        let m = Machine::new();
        let out = m
            .cmd()
            .args(["login", &host, "--key", ADMIN_KEY, "--skip-tls-verify"])
            .env("INFRA_NO_KEYRING", "1")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("the infra CLI is version {VERSION}"))
                && err.contains(&format!("the server is {server_version}"))
                && err.contains(want),
            "a server {server_version} against CLI {VERSION}: {err}"
        );
        assert!(
            !err.contains("HTTP") && !err.contains("400"),
            "no raw HTTP in the message: {err}"
        );
        match hint {
            Some(h) => assert!(
                err.contains(&format!("in a checkout of infra {server_version}, run {h}")),
                "{err}"
            ),
            None => assert!(!err.contains("To upgrade"), "{err}"),
        }
        handle.shutdown();
    }
}

/// Whether an ELF file is a position-independent executable: type ET_DYN
/// with a program interpreter (a shared library has none) or, for a
/// static-pie, the DF_1_PIE flag. Little-endian 64-bit only (what we ship).
fn is_pie(elf: &[u8]) -> Result<bool, String> {
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return Err("not a little-endian 64-bit ELF file".into());
    }
    const ET_EXEC: u16 = 2;
    const ET_DYN: u16 = 3;
    match u16_at(16) {
        ET_EXEC => return Ok(false),
        ET_DYN => {}
        other => return Err(format!("ELF type {other}")),
    }
    let (phoff, phentsize, phnum) = (
        u64_at(32) as usize,
        u16_at(54) as usize,
        u16_at(56) as usize,
    );
    let mut interp = false;
    let mut pie_flag = false;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        match u32_at(ph) {
            3 => interp = true,
            2 => {
                // PT_DYNAMIC: look for DT_FLAGS_1 (0x6ffffffb) with DF_1_PIE (0x08000000).
                let (off, size) = (u64_at(ph + 8) as usize, u64_at(ph + 32) as usize);
                for d in (off..off + size).step_by(16) {
                    if u64_at(d) == 0x6fff_fffb && u64_at(d + 8) & 0x0800_0000 != 0 {
                        pie_flag = true;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(interp || pie_flag)
}

/// Every executable a release ships is position-independent, so its code
/// and data are address-randomised like everything else in the process.
/// (Builds the release: what install.sh and packagers ship.)
#[test]
fn every_shipped_executable_is_pie() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--locked", "--bins"])
        .current_dir(repo)
        .status()
        .unwrap();
    assert!(status.success(), "cargo build --release failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| repo.join("target"));
    for bin in ["infra", "infra-credential"] {
        let path = target.join("release").join(bin);
        let elf = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            is_pie(&elf),
            Ok(true),
            "{} is not a position-independent executable",
            path.display()
        );
    }
    // And the check itself tells the two apart: the debug build is PIE too,
    // a position-dependent executable (a C one, linked -no-pie) is not.
    assert_eq!(is_pie(&std::fs::read(common::bin()).unwrap()), Ok(true));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.c"), "int main(void){return 0;}").unwrap();
    let built = Command::new("cc")
        .args(["-no-pie", "-o"])
        .arg(dir.path().join("m"))
        .arg(dir.path().join("m.c"))
        .status()
        .expect("a C compiler (cc) for the position-dependent sample");
    assert!(built.success());
    assert_eq!(
        is_pie(&std::fs::read(dir.path().join("m")).unwrap()),
        Ok(false)
    );
}
