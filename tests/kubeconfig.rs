//! Integration tests of `infra::local::kubeconfig` as the CLI uses it: many
//! infra processes writing one kubeconfig at once, and the real `kubectl`
//! reading (and writing) what infra wrote.
//!
//! This binary has its own `main` (harness = false): the parallel writers
//! and the environment test are this binary again, running the `child_*`
//! case named by an environment variable, since locks and environment
//! variables are per process. `kubectl` must be on PATH; without it the
//! kubectl test fails, it is never skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use infra::local::kubeconfig::{
    InfraCluster, kubeconfig_path, remove_infra_entries, write_infra_entries,
};
use serde_json::Value;

/// Set in the environment of the child processes: the case to run.
const CHILD: &str = "INFRA_TEST_KUBECONFIG_CHILD";
/// Printed by a child when its body ran to the end.
const DONE: &str = "INFRA-CHILD-DONE";
/// How many processes write the kubeconfig at once.
const WRITERS: usize = 20;
/// The exec plugin path written into the entries (not run here).
const EXE: &str = "/opt/infra/bin/infra";

/// A kubeconfig infra did not write, with values a careless rewrite would
/// change (quoted strings that look like other types, YAML 1.1 plain
/// booleans and octals, unknown fields).
const FOREIGN: &str = r#"# written by hand
apiVersion: v1
kind: Config
preferences:
  colors: yes
clusters:
- name: kind-kind
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: LS0tLS1CRUdJTg==
    tls-server-name: "0123"
    proxy-url: "http://proxy.example:3128"
    extensions:
    - name: tricky
      extension:
        quoted-yes: "yes"
        quoted-octal: "0123"
        quoted-version: "1.10"
        quoted-null: "null"
        quoted-date: "2001-12-14"
        plain-yes: yes
        plain-off: off
        plain-octal: 0123
        plain-version: 1.10
        multi: "line one\nline two\n"
        list: [a, "1", 1, true, "true"]
- name: other
  cluster:
    server: https://other.example
    insecure-skip-tls-verify: true
contexts:
- name: kind-kind
  context:
    cluster: kind-kind
    user: kind-kind
    namespace: "true"
- name: other
  context: {cluster: other, user: oidc}
users:
- name: kind-kind
  user:
    client-certificate-data: Y2VydA==
    client-key-data: a2V5
- name: oidc
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: kubectl
      args: [oidc-login, get-token, "--oidc-issuer-url=https://issuer.example"]
      env:
      - {name: DEBUG, value: "no"}
current-context: kind-kind
"#;

fn server(i: usize) -> String {
    format!("s{i}.example:8443")
}

/// Writer `i`'s destinations: `d{i}-a` (also in namespace `web`), `d{i}-b`.
fn clusters_for(i: usize) -> Vec<InfraCluster> {
    let c = |dest: String, ns: Option<&str>| InfraCluster {
        url: format!("https://{dest}.connector.example:8443"),
        ca_pem: format!("-----BEGIN CERTIFICATE-----\n{dest}\n-----END CERTIFICATE-----\n"),
        destination: dest,
        namespace: ns.map(str::to_string),
    };
    vec![
        c(format!("d{i}-a"), None),
        c(format!("d{i}-a"), Some("web")),
        c(format!("d{i}-b"), None),
    ]
}

/// Parses YAML the way the kubeconfig writer and kubectl do (YAML 1.1
/// booleans and octals), into JSON values for comparison.
fn parse_yaml(text: &str) -> Value {
    let options = serde_saphyr::options! { legacy_octal_numbers: true };
    serde_saphyr::from_str_with_options(text, options).unwrap_or_else(|e| {
        panic!("not valid YAML: {e}\n{text}");
    })
}

fn list<'a>(doc: &'a Value, key: &str) -> &'a [Value] {
    doc[key].as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn name(entry: &Value) -> &str {
    entry["name"].as_str().unwrap_or("")
}

fn is_infra(entry: &Value) -> bool {
    name(entry).starts_with("infra:")
}

/// The document without infra's entries.
fn foreign_part(doc: &Value) -> Value {
    let mut doc = doc.clone();
    for key in ["clusters", "contexts", "users"] {
        if let Some(items) = doc[key].as_array_mut() {
            items.retain(|e| !is_infra(e));
        }
    }
    doc
}

fn find<'a>(doc: &'a Value, key: &str, n: &str) -> &'a Value {
    list(doc, key)
        .iter()
        .find(|e| name(e) == n)
        .unwrap_or_else(|| panic!("no {key} entry {n} in {doc:#}"))
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is set for children"))
}

/// Starts child case `name` of this binary with `envs`.
fn spawn_child(name: &str, envs: &[(&str, &str)]) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(CHILD, name)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Reads a child's stderr up to its [`READY`] line (a blocking read, byte by
/// byte, so that what follows stays in the pipe for `finish_child`).
fn wait_for_ready(child: &mut std::process::Child) {
    use std::io::Read;
    let pipe = child.stderr.as_mut().unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(READY.as_bytes()) {
        match pipe.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            _ => panic!(
                "a writer ended before it was ready: {}",
                String::from_utf8_lossy(&line)
            ),
        }
    }
}

/// Waits for a child and fails with its output unless its body ran to the
/// end; returns its stdout.
fn finish_child(name: &str, child: std::process::Child) -> String {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(&format!("{DONE} {name}")),
        "child {name} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    stdout.into_owned()
}

// ---------------------------------------------------------------------------
// Parallel writers

/// Printed (on stderr) by a writer that is ready to start.
const READY: &str = "INFRA-CHILD-READY";

/// One writer: says it is ready and waits for the go (its stdin closing,
/// for all writers at once), writes its entries plus a stale destination,
/// then its entries alone (removing the stale one).
fn child_write() {
    let path = PathBuf::from(env("INFRA_TEST_KC_PATH"));
    let i: usize = env("INFRA_TEST_KC_INDEX").parse().unwrap();
    eprintln!("{READY}");
    std::io::copy(&mut std::io::stdin(), &mut std::io::sink()).unwrap();
    let mut with_stale = clusters_for(i);
    let mut stale = with_stale[0].clone();
    stale.destination = format!("d{i}-stale");
    with_stale.push(stale);
    let s = write_infra_entries(&path, &server(i), Path::new(EXE), &with_stale).unwrap();
    assert_eq!(s.added.len(), 4, "{s:?}");
    let s = write_infra_entries(&path, &server(i), Path::new(EXE), &clusters_for(i)).unwrap();
    assert_eq!(s.removed, vec![format!("infra:d{i}-stale")], "{s:?}");
    assert!(s.added.is_empty() && s.updated.is_empty(), "{s:?}");
    println!("{DONE} child_write");
}

fn parallel_processes_keep_every_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let kube = tmp.path().join(".kube");
    std::fs::create_dir(&kube).unwrap();
    let path = kube.join("config");
    std::fs::write(&path, FOREIGN).unwrap();

    // All start at once, once the last one is ready.
    let path_s = path.to_str().unwrap();
    let mut children: Vec<_> = (0..WRITERS)
        .map(|i| {
            let i = i.to_string();
            spawn_child(
                "child_write",
                &[("INFRA_TEST_KC_PATH", path_s), ("INFRA_TEST_KC_INDEX", &i)],
            )
        })
        .collect();
    for child in &mut children {
        wait_for_ready(child);
    }
    for child in &mut children {
        drop(child.stdin.take());
    }
    for child in children {
        finish_child("child_write", child);
    }

    let text = std::fs::read_to_string(&path).unwrap();
    let doc = parse_yaml(&text);
    assert_eq!(foreign_part(&doc), parse_yaml(FOREIGN), "{text}");
    let infra_names = |key: &str| -> Vec<&str> {
        let mut v: Vec<&str> = list(&doc, key)
            .iter()
            .filter(|e| is_infra(e))
            .map(name)
            .collect();
        v.sort();
        v
    };
    let mut want_contexts = Vec::new();
    let mut want_entries = Vec::new();
    for i in 0..WRITERS {
        want_contexts.extend([
            format!("infra:d{i}-a"),
            format!("infra:d{i}-a.web"),
            format!("infra:d{i}-b"),
        ]);
        want_entries.extend([format!("infra:d{i}-a"), format!("infra:d{i}-b")]);
    }
    want_contexts.sort();
    want_entries.sort();
    assert_eq!(infra_names("contexts"), want_contexts, "{text}");
    assert_eq!(infra_names("clusters"), want_entries, "{text}");
    assert_eq!(infra_names("users"), want_entries, "{text}");
    for i in 0..WRITERS {
        for dest in [format!("d{i}-a"), format!("d{i}-b")] {
            let n = format!("infra:{dest}");
            let exec = &find(&doc, "users", &n)["user"]["exec"];
            let args: Vec<&str> = exec["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            let srv = server(i);
            assert_eq!(
                args,
                ["tokens", "create", "--server", &srv, "--destination", &dest]
            );
            assert_eq!(exec["command"], EXE);
            assert_eq!(
                find(&doc, "clusters", &n)["cluster"]["server"],
                format!("https://{dest}.connector.example:8443")
            );
        }
    }
    // Only the kubeconfig and infra's lock file are left in the directory:
    // no temporary file, no kubectl lock.
    let mut left: Vec<String> = std::fs::read_dir(&kube)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["config", "config.infra.lock"]);
}

// ---------------------------------------------------------------------------
// kubectl

/// Runs kubectl with a private HOME and no KUBECONFIG.
fn kubectl(home: &Path, args: &[&str]) -> Output {
    Command::new("kubectl")
        .args(args)
        .env("HOME", home)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap_or_else(|e| panic!("cannot run kubectl (it must be on PATH for this test): {e}"))
}

fn kubectl_ok(home: &Path, args: &[&str]) -> String {
    let out = kubectl(home, args);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `kubectl config view --raw -o json`: the file as kubectl understands it.
fn kubectl_view(home: &Path, file: &str) -> Value {
    let json = kubectl_ok(
        home,
        &[
            "config",
            "view",
            "--kubeconfig",
            file,
            "--raw",
            "-o",
            "json",
        ],
    );
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

fn kubectl_accepts_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let path = home.join("kubeconfig");
    let file = path.to_str().unwrap();
    std::fs::write(&path, FOREIGN).unwrap();
    let before = kubectl_view(home, file);

    let a = server(1);
    let prod = |ns: Option<&str>| InfraCluster {
        destination: "prod".into(),
        namespace: ns.map(str::to_string),
        url: "https://prod.connector.example:8443".into(),
        ca_pem: "-----BEGIN CERTIFICATE-----\nMIIBprod\n-----END CERTIFICATE-----\n".into(),
    };
    write_infra_entries(&path, &a, Path::new(EXE), &[prod(None), prod(Some("web"))]).unwrap();
    let b = server(2);
    let mut dev = prod(None);
    dev.destination = "dev".into();
    dev.ca_pem.clear();
    write_infra_entries(&path, &b, Path::new(EXE), &[dev]).unwrap();

    let after = kubectl_view(home, file);
    assert_eq!(foreign_part(&after), foreign_part(&before));
    assert_eq!(after["current-context"], "kind-kind");

    let ctx = &find(&after, "contexts", "infra:prod.web")["context"];
    assert_eq!(ctx["cluster"], "infra:prod");
    assert_eq!(ctx["user"], "infra:prod");
    assert_eq!(ctx["namespace"], "web");
    assert!(find(&after, "contexts", "infra:prod")["context"]["namespace"].is_null());
    let exec = &find(&after, "users", "infra:prod")["user"]["exec"];
    assert_eq!(exec["apiVersion"], "client.authentication.k8s.io/v1");
    assert_eq!(exec["command"], EXE);
    assert_eq!(
        exec["args"],
        serde_json::json!(["tokens", "create", "--server", a, "--destination", "prod"])
    );
    assert_eq!(exec["interactiveMode"], "Never");
    assert_eq!(exec["provideClusterInfo"], true);
    let cluster = &find(&after, "clusters", "infra:prod")["cluster"];
    assert_eq!(cluster["server"], "https://prod.connector.example:8443");
    assert_eq!(
        cluster["certificate-authority-data"],
        "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJwcm9kCi0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K"
    );
    assert!(
        find(&after, "clusters", "infra:dev")["cluster"]["certificate-authority-data"].is_null()
    );

    let names = kubectl_ok(
        home,
        &["config", "get-contexts", "--kubeconfig", file, "-o", "name"],
    );
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "infra:dev",
            "infra:prod",
            "infra:prod.web",
            "kind-kind",
            "other"
        ]
    );
    let table = kubectl_ok(home, &["config", "get-contexts", "--kubeconfig", file]);
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some("infra:prod.web"))
        .unwrap_or_else(|| panic!("{table}"));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["infra:prod.web", "infra:prod", "infra:prod", "web"]
    );

    // kubectl can still write the file (infra left no `.lock` behind), and
    // infra reads what kubectl wrote; the chosen context is kept while it
    // exists and unset when its entries go.
    kubectl_ok(
        home,
        &["config", "use-context", "infra:prod", "--kubeconfig", file],
    );
    write_infra_entries(&path, &a, Path::new(EXE), &[prod(None)]).unwrap();
    let current = kubectl_ok(home, &["config", "current-context", "--kubeconfig", file]);
    assert_eq!(current.trim(), "infra:prod");
    let s = remove_infra_entries(&path, &a).unwrap();
    assert_eq!(s.removed, ["infra:prod"]);
    let out = kubectl(home, &["config", "current-context", "--kubeconfig", file]);
    assert!(!out.status.success(), "current-context is still set");
    let view = kubectl_view(home, file);
    assert_eq!(
        foreign_part(&view)["clusters"],
        foreign_part(&before)["clusters"]
    );
    assert_eq!(foreign_part(&view)["users"], foreign_part(&before)["users"]);
    let names = kubectl_ok(
        home,
        &["config", "get-contexts", "--kubeconfig", file, "-o", "name"],
    );
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(names, ["infra:dev", "kind-kind", "other"]);
}

// ---------------------------------------------------------------------------
// KUBECONFIG

fn child_path() {
    println!("{}", kubeconfig_path().display());
    println!("{DONE} child_path");
}

fn kubeconfig_path_follows_the_environment() {
    let run = |kubeconfig: Option<&str>| {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.env(CHILD, "child_path").env("HOME", "/home/kc-test");
        match kubeconfig {
            Some(v) => cmd.env("KUBECONFIG", v),
            None => cmd.env_remove("KUBECONFIG"),
        };
        let child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = finish_child("child_path", child);
        out.lines().next().unwrap().to_string()
    };
    let sep = if cfg!(windows) { ";" } else { ":" };
    assert_eq!(
        run(Some(&format!("{sep}/tmp/first{sep}/tmp/second"))),
        "/tmp/first"
    );
    assert_eq!(run(Some("/tmp/only")), "/tmp/only");
    if cfg!(unix) {
        assert_eq!(run(Some("")), "/home/kc-test/.kube/config");
        assert_eq!(run(None), "/home/kc-test/.kube/config");
    }
}

fn main() {
    let children: &[(&str, fn())] = &[("child_write", child_write), ("child_path", child_path)];
    if let Ok(name) = std::env::var(CHILD) {
        let Some((_, f)) = children.iter().find(|(n, _)| *n == name) else {
            eprintln!("no child case named {name}");
            std::process::exit(2);
        };
        f();
        return;
    }
    let tests: &[(&str, fn())] = &[
        (
            "parallel_processes_keep_every_entry",
            parallel_processes_keep_every_entry,
        ),
        ("kubectl_accepts_the_file", kubectl_accepts_the_file),
        (
            "kubeconfig_path_follows_the_environment",
            kubeconfig_path_follows_the_environment,
        ),
    ];
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (mut passed, mut failed) = (0, 0);
    for (name, f) in tests {
        if !filter.is_empty() && !filter.iter().any(|p| name.contains(p.as_str())) {
            continue;
        }
        match std::panic::catch_unwind(f) {
            Ok(()) => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(101);
    }
}
