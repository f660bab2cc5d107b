//! The module map stays true: every `crate::…` path in `src/` is checked
//! against the rooms each module may enter (DESIGN.md's boundaries, and the
//! README's architecture section). A forbidden edge fails with the file,
//! the line and the rule it breaks. Inside the server, SQL stays behind the
//! store's seam: sqlx is named in `src/server/store/` only.

use std::collections::BTreeMap;
use std::path::Path;

/// Which top-level modules each module may name. The shared rooms (`api`,
/// the wire contract; `web`, the browser side of sign-in; `edge`, the
/// network edge; `clock`, every role's one "now"; `fsutil`, `shutdown`) may be used by the roles; the roles
/// (`server`, `connector`, `cli`) and this machine's rooms (`local`,
/// `login`, `tui`, `client`) keep apart as the map says.
fn allowed(module: &str) -> &'static [&'static str] {
    match module {
        // The contract and the small shared rooms depend on (almost) nothing.
        "api" | "fsutil" | "shutdown" | "clock" => &[],
        "web" | "edge" => &["api"],
        // The client speaks the contract.
        "client" => &["api", "web"],
        // This machine: files, keyring, browser sign-in, the picker (pure).
        "local" => &["api", "fsutil", "clock"],
        "login" => &["api", "web"],
        "tui" => &[],
        // The server and the connector never reach the CLI's rooms, nor each other.
        "server" => &["api", "web", "edge", "fsutil", "shutdown", "clock"],
        "connector" => &[
            "api", "client", "web", "edge", "fsutil", "shutdown", "clock",
        ],
        // The CLI may use everything, but the server and the connector only
        // to start them (see `cli_may_name`).
        "cli" => &[
            "api",
            "client",
            "web",
            "edge",
            "fsutil",
            "shutdown",
            "clock",
            "local",
            "login",
            "tui",
            "server",
            "connector",
        ],
        _ => &[],
    }
}

/// The only things of the server and the connector the CLI may name.
fn cli_may_name(path: &str) -> bool {
    matches!(
        path,
        "crate::server::run"
            | "crate::server::ServerArgs"
            | "crate::connector::run"
            | "crate::connector::ConnectorArgs"
    )
}

/// `crate::a::b::C`-like paths in a line of code (comments left out).
fn paths(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or_default();
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        out.push(tail[..end].trim_end_matches(':').to_string());
        rest = &tail[end..];
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_import_keeps_to_the_module_map() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut broken = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        // The binaries' entry points and the crate root are outside the rooms.
        if ["main", "lib", "bin"].contains(&module.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            for path in paths(line) {
                let target = path
                    .trim_start_matches("crate::")
                    .split("::")
                    .next()
                    .unwrap_or_default()
                    .to_string();
                if target.is_empty() || target == module {
                    continue;
                }
                *seen.entry(format!("{module} -> {target}")).or_default() += 1;
                let ok = allowed(&module).contains(&target.as_str())
                    && (module != "cli"
                        || !["server", "connector"].contains(&target.as_str())
                        || cli_may_name(&path));
                if !ok {
                    broken.push(format!(
                        "{}:{}: {module} must not name {path} (it may name: {:?}{})",
                        rel.display(),
                        n + 1,
                        allowed(&module),
                        if module == "cli" {
                            "; of the server and the connector only what starts them"
                        } else {
                            ""
                        }
                    ));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "imports that break the module map:\n{}",
        broken.join("\n")
    );
    // The checker itself sees the edges it should (so it cannot pass by
    // seeing nothing).
    for edge in ["server -> api", "connector -> client", "cli -> server"] {
        assert!(seen.contains_key(edge), "{edge} not seen: {seen:?}");
    }
}

/// The store is the one seam to the database: no SQL, and no sqlx, outside
/// `src/server/store/` (comments may name it).
#[test]
fn sql_stays_in_the_store() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let store = src.join("server").join("store");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut leaks = Vec::new();
    let mut inside = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if !(code.contains("sqlx::") || code.trim_start().starts_with("use sqlx")) {
                continue;
            }
            if f.starts_with(&store) {
                inside += 1;
            } else {
                let rel = f.strip_prefix(&src).unwrap();
                leaks.push(format!("{}:{}: {}", rel.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "sqlx outside src/server/store (add a Store method instead):\n{}",
        leaks.join("\n")
    );
    // The checker sees the queries where they belong (so it cannot pass by
    // seeing nothing).
    assert!(inside > 50, "only {inside} sqlx lines seen in the store");
}

#[test]
fn the_checker_reads_paths_out_of_code() {
    assert_eq!(
        paths("use crate::server::store::{self, X}; // crate::cli::no"),
        ["crate::server::store"]
    );
    assert_eq!(
        paths("    let a = crate::web::Attempt::to(crate::api::x());"),
        ["crate::web::Attempt::to", "crate::api::x"]
    );
    assert!(!allowed("connector").contains(&"server"));
    assert!(!allowed("server").contains(&"login"));
    assert!(cli_may_name("crate::server::run") && !cli_may_name("crate::server::store"));
}
