//! The container image and the Kubernetes manifests name only things that
//! exist: `deploy/*.yaml` is read with serde-saphyr (every document of every
//! file) and held against the real binary's `--help` (flags, `INFRA_*`
//! variables, listen addresses and their defaults), against itself (Secrets,
//! ConfigMaps, claims, service accounts and roles it refers to; Services,
//! selectors, ports and probes) and against its header comments (what the
//! reader creates with `kubectl create`). The `Dockerfile` and
//! `.dockerignore` are checked statically (no Docker daemon needed), and the
//! image name they, the manifests and the README give must be one.
//!
//! `deploy/server.yaml` is also run: the header's commands (with `kubectl`
//! recorded, not run) make its Secret, the server starts with the
//! manifest's arguments and files, its probes answer, the admin key the
//! header made logs in, and SIGTERM stops it.
//!
//! Each check is shown to fail on a broken copy (`checks_catch_broken_*`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The image every manifest runs, as the README documents it.
const IMAGE: &str = concat!("infra:", env!("CARGO_PKG_VERSION"));

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn assert_none(what: &str, problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{what}:\n  - {}",
        problems.join("\n  - ")
    );
}

// ---------------------------------------------------------------------------
// The binary's own word: `infra SUBCOMMAND --help`.
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Opt {
    takes_value: bool,
    env: Option<String>,
    default: Option<String>,
}

#[derive(Debug, Default)]
struct Help {
    /// `--flag` → what the help says of it.
    opts: BTreeMap<String, Opt>,
}

impl Help {
    fn envs(&self) -> BTreeSet<&str> {
        self.opts
            .values()
            .filter_map(|o| o.env.as_deref())
            .collect()
    }
    fn flag_of_env(&self, env: &str) -> Option<&str> {
        self.opts
            .iter()
            .find(|(_, o)| o.env.as_deref() == Some(env))
            .map(|(f, _)| f.as_str())
    }
}

/// `infra SUB --help`, parsed; None when SUB is not a subcommand.
fn help(sub: &str) -> Option<&'static Help> {
    static CACHE: OnceLock<Mutex<BTreeMap<String, Option<&'static Help>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(h) = cache.lock().unwrap().get(sub) {
        return *h;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_infra"))
        .args([sub, "--help"])
        .env("COLUMNS", "100")
        .output()
        .expect("run infra --help");
    let h = out
        .status
        .success()
        .then(|| &*Box::leak(Box::new(parse_help(&String::from_utf8_lossy(&out.stdout)))));
    cache.lock().unwrap().insert(sub.to_string(), h);
    h
}

/// Reads clap's option list: an option starts on a line indented less than
/// its description (`  -h, --help`, `      --listen <ADDR>`); the
/// description, however wrapped, holds `[env: NAME=…]` and `[default: …]`.
/// Only the `…Options:` sections count: the examples after them hold flags
/// too (`    --name prod`), with values, not `<VALUE>` placeholders.
fn parse_help(text: &str) -> Help {
    let mut help = Help::default();
    let mut cur: Option<(String, bool, String)> = None;
    let mut in_options = false;
    let mut flush = |cur: &mut Option<(String, bool, String)>| {
        if let Some((name, takes_value, desc)) = cur.take() {
            let desc = desc.split_whitespace().collect::<Vec<_>>().join(" ");
            let bracket = |tag: &str, stop: &[char]| {
                desc.split_once(tag)
                    .map(|(_, rest)| rest.split(stop).next().unwrap_or("").trim().to_string())
            };
            help.opts.insert(
                name,
                Opt {
                    takes_value,
                    env: bracket("[env: ", &['=', ']']),
                    default: bracket("[default: ", &[']']),
                },
            );
        }
    };
    for line in text.lines() {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        if t.is_empty() {
            continue;
        }
        if indent == 0 {
            flush(&mut cur);
            in_options = t.to_ascii_lowercase().ends_with("options:");
            continue;
        }
        if !in_options {
            continue;
        }
        if indent < 10 && t.starts_with('-') {
            flush(&mut cur);
            let words: Vec<&str> = t.split_whitespace().collect();
            let mut i = 0;
            let mut name = None;
            let mut takes_value = false;
            while i < words.len() {
                let w = words[i].trim_end_matches(',');
                if let Some(long) = w.strip_prefix("--") {
                    name = Some(format!("--{long}"));
                    i += 1;
                    if words.get(i).is_some_and(|v| v.starts_with('<')) {
                        takes_value = true;
                        i += 1;
                    }
                    break;
                } else if w.starts_with('-') {
                    i += 1;
                } else {
                    break;
                }
            }
            cur = name.map(|n| (n, takes_value, words[i..].join(" ")));
        } else if let Some(c) = &mut cur {
            c.2.push(' ');
            c.2.push_str(t);
        }
    }
    flush(&mut cur);
    help
}

// ---------------------------------------------------------------------------
// The manifests, and what their headers tell the reader to create.
// ---------------------------------------------------------------------------

struct Manifest {
    /// `deploy/NAME.yaml`
    name: String,
    text: String,
    docs: Vec<Value>,
    created: Created,
}

/// What the header's `kubectl create` commands make.
#[derive(Debug, Default)]
struct Created {
    namespaces: BTreeSet<String>,
    /// Secret name → (namespace, the keys its command gives).
    secrets: BTreeMap<String, (Option<String>, BTreeSet<String>)>,
    /// `(kind in lower case, name)` of anything else created.
    other: BTreeSet<(String, String)>,
}

impl Manifest {
    fn parse(name: &str, text: String) -> Result<Manifest, String> {
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(&text).map_err(|e| format!("{name}: not YAML: {e}"))?;
        let created = header_creates(&header(&text));
        Ok(Manifest {
            name: name.to_string(),
            text,
            docs,
            created,
        })
    }

    fn defined(&self, kind: &str, name: &str) -> Option<&Value> {
        self.docs
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
    }
}

fn manifest_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo().join("deploy"))
        .expect("deploy/")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .map(|n| format!("deploy/{n}"))
        .collect();
    names.sort();
    names
}

fn manifests() -> Vec<Manifest> {
    let names = manifest_names();
    assert!(
        names.contains(&"deploy/server.yaml".to_string())
            && names.contains(&"deploy/connector.yaml".to_string()),
        "deploy/ holds {names:?}"
    );
    names
        .iter()
        .map(|n| Manifest::parse(n, read(n)).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// The comment lines before the first document, without their `#`.
fn header(text: &str) -> String {
    text.lines()
        .take_while(|l| !l.starts_with("---") && (l.starts_with('#') || l.trim().is_empty()))
        .map(|l| l.strip_prefix('#').unwrap_or(l))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Splits a shell line into words: quotes removed, nothing expanded; a
/// word starting with `#` ends the line.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None if c == '#' && !in_word => break,
            None => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

fn header_creates(header: &str) -> Created {
    let mut created = Created::default();
    let joined = header.replace("\\\n", " ");
    for line in joined.lines() {
        let words = shell_words(line);
        let Some(k) = words.iter().position(|w| w == "kubectl") else {
            continue;
        };
        let words = &words[k + 1..];
        let mut namespace = None;
        let mut rest = Vec::new();
        let mut i = 0;
        while i < words.len() {
            match words[i].as_str() {
                "-n" | "--namespace" => {
                    namespace = words.get(i + 1).cloned();
                    i += 2;
                }
                w => {
                    if let Some(ns) = w.strip_prefix("--namespace=") {
                        namespace = Some(ns.to_string());
                    } else {
                        rest.push(w.to_string());
                    }
                    i += 1;
                }
            }
        }
        if rest.first().map(String::as_str) != Some("create") {
            continue;
        }
        match rest.get(1).map(String::as_str) {
            Some("namespace" | "ns") => {
                if let Some(n) = rest.get(2) {
                    created.namespaces.insert(n.clone());
                }
            }
            Some("secret") => {
                let (Some(kind), Some(name)) = (rest.get(2), rest.get(3)) else {
                    continue;
                };
                let mut keys = BTreeSet::new();
                if kind == "tls" {
                    keys.extend(["tls.crt".to_string(), "tls.key".to_string()]);
                }
                if kind == "docker-registry" {
                    keys.insert(".dockerconfigjson".to_string());
                }
                for w in &rest[4..] {
                    if let Some(v) = w
                        .strip_prefix("--from-literal=")
                        .or_else(|| w.strip_prefix("--from-file="))
                    {
                        let key = match v.split_once('=') {
                            Some((key, _)) => key,
                            None => v.rsplit('/').next().unwrap_or(v),
                        };
                        keys.insert(key.to_string());
                    }
                }
                created.secrets.insert(name.clone(), (namespace, keys));
            }
            Some(kind) => {
                if let Some(n) = rest.get(2) {
                    created.other.insert((kind.to_string(), n.clone()));
                }
            }
            None => {}
        }
    }
    created
}

// ---------------------------------------------------------------------------
// The checks on the manifests.
// ---------------------------------------------------------------------------

const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
    "StorageClass",
];

/// The kinds these manifests may use, with their API versions.
const KINDS: &[(&str, &str)] = &[
    ("Namespace", "v1"),
    ("ServiceAccount", "v1"),
    ("Secret", "v1"),
    ("ConfigMap", "v1"),
    ("PersistentVolumeClaim", "v1"),
    ("Service", "v1"),
    ("Deployment", "apps/v1"),
    ("ClusterRole", "rbac.authorization.k8s.io/v1"),
    ("ClusterRoleBinding", "rbac.authorization.k8s.io/v1"),
    ("Role", "rbac.authorization.k8s.io/v1"),
    ("RoleBinding", "rbac.authorization.k8s.io/v1"),
];

fn str_of(v: &Value) -> Option<&str> {
    v.as_str()
}

fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn doc_id(d: &Value) -> String {
    format!(
        "{}/{}",
        d["kind"].as_str().unwrap_or("?"),
        d["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// The pod template of a workload.
fn pod_template(d: &Value) -> Option<&Value> {
    match d["kind"].as_str()? {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            Some(&d["spec"]["template"])
        }
        _ => None,
    }
}

fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    items(&pod["initContainers"])
        .iter()
        .chain(items(&pod["containers"]))
}

/// Whether `want`'s pairs are all in `labels`.
fn labels_match(want: &Value, labels: &Value) -> bool {
    want.as_object()
        .is_some_and(|w| !w.is_empty() && w.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// Checks one manifest file; every problem, each naming where it is.
fn check_manifest(m: &Manifest) -> Vec<String> {
    let mut p = Vec::new();
    if m.docs.is_empty() {
        p.push(format!("{}: holds no document", m.name));
    }
    let mut namespaces = BTreeSet::new();
    for d in &m.docs {
        let at = format!("{}: {}", m.name, doc_id(d));
        for field in ["apiVersion", "kind"] {
            if d[field].as_str().is_none_or(str::is_empty) {
                p.push(format!("{at}: no {field}"));
            }
        }
        let name = d["metadata"]["name"].as_str().unwrap_or("");
        let dns = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        };
        if !dns(name) {
            p.push(format!(
                "{at}: metadata.name {name:?} is not a Kubernetes name"
            ));
        }
        let kind = d["kind"].as_str().unwrap_or("");
        match KINDS.iter().find(|(k, _)| *k == kind) {
            None => p.push(format!(
                "{at}: kind {kind:?} is not one this test knows ({:?}); add it if it is real",
                KINDS.iter().map(|k| k.0).collect::<Vec<_>>()
            )),
            Some((_, api)) if d["apiVersion"] != *api => p.push(format!(
                "{at}: a {kind} is apiVersion {api}, not {}",
                d["apiVersion"]
            )),
            Some(_) => {}
        }
        let ns = d["metadata"]["namespace"].as_str();
        if CLUSTER_SCOPED.contains(&kind) {
            if ns.is_some() {
                p.push(format!("{at}: a {kind} has no namespace"));
            }
        } else {
            match ns {
                Some(ns) => {
                    namespaces.insert(ns.to_string());
                }
                None => p.push(format!("{at}: no metadata.namespace")),
            }
        }
    }
    for ns in &namespaces {
        let defined = m.defined("Namespace", ns).is_some();
        if !defined && !m.created.namespaces.contains(ns) {
            p.push(format!(
                "{}: the namespace {ns} is neither defined here nor made in the header \
                 (`kubectl create namespace {ns}`)",
                m.name
            ));
        }
    }
    if namespaces.len() > 1 {
        p.push(format!(
            "{}: documents in several namespaces: {namespaces:?}",
            m.name
        ));
    }
    // Without `-n`, kubectl makes a Secret in the current namespace.
    if let Some(namespace) = namespaces.iter().next() {
        for (secret, (ns, _)) in &m.created.secrets {
            if ns.as_deref() != Some(namespace.as_str()) {
                p.push(format!(
                    "{}: the header makes the Secret {secret} in {}, not in {namespace} \
                     (`kubectl -n {namespace} create secret …`)",
                    m.name,
                    ns.as_deref().unwrap_or("the current namespace")
                ));
            }
        }
    }

    for d in &m.docs {
        let at = format!("{}: {}", m.name, doc_id(d));
        match d["kind"].as_str().unwrap_or("") {
            "ClusterRoleBinding" | "RoleBinding" => check_binding(m, d, &at, &mut p),
            "Service" => check_service(m, d, &at, &mut p),
            _ => {}
        }
        if let Some(template) = pod_template(d) {
            check_workload(m, d, template, &at, &mut p);
        }
    }
    check_comments(m, &mut p);
    p
}

fn check_binding(m: &Manifest, d: &Value, at: &str, p: &mut Vec<String>) {
    let role_kind = d["roleRef"]["kind"].as_str().unwrap_or("");
    let role = d["roleRef"]["name"].as_str().unwrap_or("");
    require_object(m, role_kind, role, &format!("{at}: roleRef"), p);
    for s in items(&d["subjects"]) {
        if s["kind"] == "ServiceAccount" {
            let name = s["name"].as_str().unwrap_or("");
            require_object(m, "ServiceAccount", name, &format!("{at}: subject"), p);
            if let Some(sa) = m.defined("ServiceAccount", name)
                && sa["metadata"]["namespace"] != s["namespace"]
            {
                p.push(format!(
                    "{at}: subject ServiceAccount {name} in namespace {}, but it is in {}",
                    s["namespace"], sa["metadata"]["namespace"]
                ));
            }
        }
    }
}

/// A ClusterRole, ServiceAccount, ConfigMap, claim… is defined in the file,
/// or the header makes it (`kubectl create KIND NAME`).
fn require_object(m: &Manifest, kind: &str, name: &str, what: &str, p: &mut Vec<String>) {
    if kind == "Secret" {
        return require_secret_key(m, name, None, what, p);
    }
    let made = m
        .created
        .other
        .contains(&(kind.to_ascii_lowercase(), name.to_string()));
    if m.defined(kind, name).is_none() && !made {
        p.push(format!(
            "{what} names the {kind} {name:?}, which is neither defined in {} nor made in its header \
             (`kubectl create {} {name}`)",
            m.name,
            kind.to_ascii_lowercase()
        ));
    }
}

/// A Secret (and its key) is defined in the file, or the header makes it
/// with `kubectl create secret TYPE NAME --from-literal=KEY=…`.
fn require_secret_key(
    m: &Manifest,
    name: &str,
    key: Option<&str>,
    what: &str,
    p: &mut Vec<String>,
) {
    if let Some(s) = m.defined("Secret", name) {
        if let Some(key) = key
            && s["data"].get(key).is_none()
            && s["stringData"].get(key).is_none()
        {
            p.push(format!("{what}: the Secret {name} has no key {key}"));
        }
        return;
    }
    match m.created.secrets.get(name) {
        None => p.push(format!(
            "{what} names the Secret {name:?}, which is neither defined in {} nor made in its \
             header (`kubectl create secret generic {name} …`)",
            m.name
        )),
        Some((_, keys)) => {
            if let Some(key) = key
                && !keys.contains(key)
            {
                p.push(format!(
                    "{what} reads the key {key:?} of the Secret {name}, which the header's \
                     `kubectl create secret … {name}` does not give (it gives {keys:?})"
                ));
            }
        }
    }
}

fn require_config_key(
    m: &Manifest,
    name: &str,
    key: Option<&str>,
    what: &str,
    p: &mut Vec<String>,
) {
    require_object(m, "ConfigMap", name, what, p);
    if let (Some(cm), Some(key)) = (m.defined("ConfigMap", name), key)
        && cm["data"].get(key).is_none()
        && cm["binaryData"].get(key).is_none()
    {
        p.push(format!("{what}: the ConfigMap {name} has no key {key}"));
    }
}

/// Where a Service's or probe's port lands: the container port it names.
fn container_port<'a>(c: &'a Value, port: &Value) -> Option<&'a Value> {
    items(&c["ports"]).iter().find(|cp| match port {
        Value::String(name) => cp["name"] == *name,
        Value::Number(n) => cp["containerPort"]
            .as_u64()
            .is_some_and(|p| Some(p) == n.as_u64()),
        _ => false,
    })
}

fn check_service(m: &Manifest, d: &Value, at: &str, p: &mut Vec<String>) {
    let selector = &d["spec"]["selector"];
    let pods: Vec<&Value> = m
        .docs
        .iter()
        .filter(|w| w["metadata"]["namespace"] == d["metadata"]["namespace"])
        .filter_map(pod_template)
        .filter(|t| labels_match(selector, &t["metadata"]["labels"]))
        .collect();
    if pods.is_empty() {
        p.push(format!(
            "{at}: its selector {selector} matches no pod template in {}",
            m.name
        ));
    }
    for port in items(&d["spec"]["ports"]) {
        let target = if port["targetPort"].is_null() {
            &port["port"]
        } else {
            &port["targetPort"]
        };
        for pod in &pods {
            let found =
                containers(&pod["spec"]).find_map(|c| container_port(c, target).map(|cp| (c, cp)));
            match found {
                None => p.push(format!(
                    "{at}: targetPort {target} is no container port of the pods it selects"
                )),
                Some((c, cp)) => {
                    if let Some(l) = infra_listeners(c).ok().and_then(|ls| {
                        ls.into_iter()
                            .find(|l| Some(l.addr.port() as u64) == cp["containerPort"].as_u64())
                    }) && l.flag == "--metrics-listen"
                    {
                        p.push(format!(
                            "{at}: exposes {target}, the private --metrics-listen port (keep it in the pod network)"
                        ));
                    }
                }
            }
        }
    }
}

/// An address an infra container listens on, from its flags.
struct Listener {
    flag: &'static str,
    addr: SocketAddr,
    scheme: &'static str,
}

/// The infra subcommand a container runs (`args[0]`), if it runs infra.
fn infra_subcommand(c: &Value) -> Option<&str> {
    if c["image"].as_str() != Some(IMAGE) {
        return None;
    }
    items(&c["args"]).first().and_then(str_of)
}

/// `--flag` → value, from the container's args and then its literal
/// `INFRA_*` variables, as the binary reads them.
fn given(c: &Value, help: &Help) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in items(&c["env"]) {
        if let (Some(name), Some(v)) = (e["name"].as_str(), e["value"].as_str())
            && let Some(flag) = help.flag_of_env(name)
        {
            out.insert(flag.to_string(), v.to_string());
        }
    }
    let args: Vec<&str> = items(&c["args"]).iter().filter_map(str_of).collect();
    let mut i = 1;
    while i < args.len() {
        let a = args[i];
        if let Some((flag, v)) = a.split_once('=') {
            out.insert(flag.to_string(), v.to_string());
        } else if help.opts.get(a).is_some_and(|o| o.takes_value) {
            out.insert(a.to_string(), args.get(i + 1).unwrap_or(&"").to_string());
            i += 1;
        } else {
            out.insert(a.to_string(), String::new());
        }
        i += 1;
    }
    out
}

fn infra_listeners(c: &Value) -> Result<Vec<Listener>, String> {
    let Some(help) = infra_subcommand(c).and_then(help) else {
        return Ok(Vec::new());
    };
    let given = given(c, help);
    let mut out = Vec::new();
    for (flag, scheme) in [("--listen", "HTTPS"), ("--metrics-listen", "HTTP")] {
        let Some(opt) = help.opts.get(flag) else {
            continue;
        };
        let value = given.get(flag).cloned().or_else(|| {
            opt.default
                .as_deref()
                .map(|d| d.split(',').next().unwrap_or(d).trim().to_string())
        });
        let Some(value) = value else { continue };
        if value == "off" {
            continue;
        }
        let addr = value
            .parse()
            .map_err(|_| format!("{flag}={value} is not an address"))?;
        out.push(Listener { flag, addr, scheme });
    }
    Ok(out)
}

fn check_workload(m: &Manifest, d: &Value, template: &Value, at: &str, p: &mut Vec<String>) {
    let labels = &template["metadata"]["labels"];
    if d["kind"] == "Deployment" && !labels_match(&d["spec"]["selector"]["matchLabels"], labels) {
        p.push(format!(
            "{at}: selector.matchLabels {} is not among the pod labels {labels}",
            d["spec"]["selector"]["matchLabels"]
        ));
    }
    let pod = &template["spec"];
    if let Some(sa) = pod["serviceAccountName"].as_str() {
        require_object(
            m,
            "ServiceAccount",
            sa,
            &format!("{at}: serviceAccountName"),
            p,
        );
    }
    for s in items(&pod["imagePullSecrets"]) {
        let name = s["name"].as_str().unwrap_or("");
        require_secret_key(m, name, None, &format!("{at}: imagePullSecrets"), p);
    }
    let mut claims = false;
    for v in items(&pod["volumes"]) {
        let what = format!("{at}: volume {}", v["name"]);
        if let Some(name) = v["secret"]["secretName"].as_str() {
            require_secret_key(m, name, None, &what, p);
            for i in items(&v["secret"]["items"]) {
                require_secret_key(m, name, i["key"].as_str(), &what, p);
            }
        }
        if let Some(name) = v["configMap"]["name"].as_str() {
            require_config_key(m, name, None, &what, p);
            for i in items(&v["configMap"]["items"]) {
                require_config_key(m, name, i["key"].as_str(), &what, p);
            }
        }
        if let Some(name) = v["persistentVolumeClaim"]["claimName"].as_str() {
            claims = true;
            require_object(m, "PersistentVolumeClaim", name, &what, p);
        }
    }
    if claims && d["kind"] == "Deployment" {
        if d["spec"]["replicas"].as_u64().unwrap_or(1) != 1 {
            p.push(format!(
                "{at}: more than one replica on a PersistentVolumeClaim (SQLite is one server's)"
            ));
        }
        if d["spec"]["strategy"]["type"] != "Recreate" {
            p.push(format!(
                "{at}: a Deployment on a ReadWriteOnce claim needs strategy Recreate (the new pod \
                 cannot mount it while the old one runs)"
            ));
        }
    }
    let mut runs_infra = false;
    for c in containers(pod) {
        let at = format!("{at}: container {}", c["name"]);
        if c["image"] != IMAGE {
            p.push(format!(
                "{at}: image {} is not {IMAGE}, the image the README documents",
                c["image"]
            ));
            continue;
        }
        runs_infra = true;
        check_infra_container(m, pod, c, &at, p);
    }
    if runs_infra {
        let sc = &pod["securityContext"];
        if sc["runAsNonRoot"] != true {
            p.push(format!("{at}: the pod does not set runAsNonRoot: true"));
        }
        if sc["runAsUser"].as_u64() == Some(0) {
            p.push(format!("{at}: the pod runs as root"));
        }
        if sc["seccompProfile"]["type"] != "RuntimeDefault" {
            p.push(format!(
                "{at}: the pod's seccompProfile is not RuntimeDefault"
            ));
        }
        // Kubernetes would add <SERVICE>_PORT, _SERVICE_HOST… for every
        // Service in the namespace: `infra-server` and `infra-connector` make
        // INFRA_SERVER_* and INFRA_CONNECTOR_*, the names of the flags.
        if pod["enableServiceLinks"] != false {
            p.push(format!(
                "{at}: enableServiceLinks is not false (Services named infra-* would set INFRA_* variables)"
            ));
        }
    }
}

fn check_infra_container(m: &Manifest, pod: &Value, c: &Value, at: &str, p: &mut Vec<String>) {
    if !c["command"].is_null() {
        p.push(format!(
            "{at}: sets command {}: the image's ENTRYPOINT is infra, give args",
            c["command"]
        ));
    }
    let args: Vec<&str> = items(&c["args"]).iter().filter_map(str_of).collect();
    if args.len() != items(&c["args"]).len() {
        p.push(format!("{at}: an argument that is not a string"));
    }
    let Some(sub) = args.first() else {
        p.push(format!("{at}: no args: which role (server, connector)?"));
        return;
    };
    let Some(help) = help(sub) else {
        p.push(format!("{at}: `infra {sub}` is not a subcommand"));
        return;
    };
    // Every flag is one the subcommand has, with a value when it takes one.
    let mut seen = BTreeSet::new();
    let mut i = 1;
    while i < args.len() {
        let a = args[i];
        i += 1;
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f, Some(v)),
            None => (a, None),
        };
        if !flag.starts_with("--") {
            p.push(format!(
                "{at}: argument {a:?} is not a --flag of `infra {sub}`"
            ));
            continue;
        }
        let Some(opt) = help.opts.get(flag) else {
            p.push(format!(
                "{at}: `infra {sub}` has no flag {flag} (it has {})",
                help.opts.keys().cloned().collect::<Vec<_>>().join(" ")
            ));
            continue;
        };
        if !seen.insert(flag) {
            p.push(format!("{at}: {flag} given twice"));
        }
        match (opt.takes_value, inline) {
            (true, None) => {
                if args.get(i).is_none_or(|v| v.starts_with("--")) {
                    p.push(format!("{at}: {flag} needs a value"));
                } else {
                    i += 1;
                }
            }
            (false, Some(_)) => p.push(format!("{at}: {flag} takes no value")),
            _ => {}
        }
    }
    // Every INFRA_* variable is one the subcommand reads.
    let envs = help.envs();
    let mut env_names = BTreeSet::new();
    for e in items(&c["env"]) {
        let name = e["name"].as_str().unwrap_or("");
        env_names.insert(name.to_string());
        if name.starts_with("INFRA_") && !envs.contains(name) {
            p.push(format!(
                "{at}: `infra {sub} --help` names no variable {name} (it reads {})",
                envs.iter().cloned().collect::<Vec<_>>().join(" ")
            ));
        }
        if let Some(flag) = help.flag_of_env(name)
            && seen.contains(flag)
        {
            p.push(format!("{at}: {name} and {flag} both given"));
        }
        let r = &e["valueFrom"]["secretKeyRef"];
        if let Some(s) = r["name"].as_str() {
            require_secret_key(m, s, r["key"].as_str(), &format!("{at}: env {name}"), p);
        }
        let r = &e["valueFrom"]["configMapKeyRef"];
        if let Some(s) = r["name"].as_str() {
            require_config_key(m, s, r["key"].as_str(), &format!("{at}: env {name}"), p);
        }
    }
    for e in items(&c["envFrom"]) {
        if let Some(s) = e["secretRef"]["name"].as_str() {
            require_secret_key(m, s, None, &format!("{at}: envFrom"), p);
        }
        if let Some(s) = e["configMapRef"]["name"].as_str() {
            require_config_key(m, s, None, &format!("{at}: envFrom"), p);
        }
    }

    // Listeners, container ports and probes agree.
    let listeners = match infra_listeners(c) {
        Ok(l) => l,
        Err(e) => {
            p.push(format!("{at}: {e}"));
            Vec::new()
        }
    };
    for cp in items(&c["ports"]) {
        let port = cp["containerPort"].as_u64().unwrap_or(0);
        match listeners.iter().find(|l| u64::from(l.addr.port()) == port) {
            None => p.push(format!(
                "{at}: containerPort {port} ({}) is no address `infra {sub}` listens on ({})",
                cp["name"],
                listeners
                    .iter()
                    .map(|l| format!("{} {}", l.flag, l.addr))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some(l) if !l.addr.ip().is_unspecified() => p.push(format!(
                "{at}: containerPort {port}: {} {} is not reachable from outside the pod \
                 (listen on 0.0.0.0)",
                l.flag, l.addr
            )),
            Some(_) => {}
        }
    }
    let mut probed = false;
    for kind in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let probe = &c[kind];
        if probe.is_null() {
            continue;
        }
        probed = true;
        let (port, get) = if !probe["httpGet"].is_null() {
            (&probe["httpGet"]["port"], Some(&probe["httpGet"]))
        } else {
            (&probe["tcpSocket"]["port"], None)
        };
        let Some(cp) = container_port(c, port) else {
            p.push(format!("{at}: {kind} port {port} is no container port"));
            continue;
        };
        let number = cp["containerPort"].as_u64().unwrap_or(0);
        if let (Some(get), Some(l)) = (
            get,
            listeners
                .iter()
                .find(|l| u64::from(l.addr.port()) == number),
        ) {
            let scheme = get["scheme"].as_str().unwrap_or("HTTP");
            if scheme != l.scheme {
                p.push(format!(
                    "{at}: {kind} asks {port} over {scheme}, but {} serves {}",
                    l.flag, l.scheme
                ));
            }
            if get["path"] != "/healthz" {
                p.push(format!(
                    "{at}: {kind} path {} is not /healthz (infra's health endpoint)",
                    get["path"]
                ));
            }
        }
    }
    if !probed {
        p.push(format!("{at}: no probes"));
    }

    // Locked down.
    let sc = &c["securityContext"];
    if sc["allowPrivilegeEscalation"] != false {
        p.push(format!("{at}: allowPrivilegeEscalation is not false"));
    }
    if sc["readOnlyRootFilesystem"] != true {
        p.push(format!("{at}: readOnlyRootFilesystem is not true"));
    }
    if !items(&sc["capabilities"]["drop"])
        .iter()
        .any(|c| c == "ALL")
    {
        p.push(format!("{at}: capabilities do not drop ALL"));
    }
    if sc["runAsUser"].as_u64() == Some(0) || sc["runAsNonRoot"] == false {
        p.push(format!("{at}: runs as root"));
    }
    for r in ["cpu", "memory"] {
        if c["resources"]["requests"][r].is_null() {
            p.push(format!("{at}: no {r} request"));
        }
    }

    // Every path a flag names is in a volume (the root file system is the
    // image's, read-only, and holds only the executables), and the data
    // directory is writable.
    let given = given(c, help);
    for (flag, value) in &given {
        if !value.starts_with('/') {
            continue;
        }
        let what = format!("{at}: {flag}={value}");
        match resolve_path(pod, c, value) {
            Err(e) => p.push(format!("{what}: {e}")),
            Ok((mount, volume, rel)) => {
                if flag == "--data-dir" {
                    if mount["readOnly"] == true
                        || (volume["emptyDir"].is_null()
                            && volume["persistentVolumeClaim"].is_null())
                    {
                        p.push(format!(
                            "{what}: the data directory must be a writable emptyDir or claim"
                        ));
                    }
                } else {
                    check_file_in_volume(m, volume, &rel, &what, p);
                }
                if flag == "--config" {
                    check_config_file(m, pod, c, volume, &rel, &env_names, &what, p);
                }
            }
        }
    }
}

/// The mount a path is under, its volume, and the path inside the volume.
fn resolve_path<'a>(
    pod: &'a Value,
    c: &'a Value,
    path: &str,
) -> Result<(&'a Value, &'a Value, String), String> {
    let sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount/";
    let mount = items(&c["volumeMounts"])
        .iter()
        .filter(|vm| {
            let mp = vm["mountPath"].as_str().unwrap_or("").trim_end_matches('/');
            path == mp || path.starts_with(&format!("{mp}/"))
        })
        .max_by_key(|vm| vm["mountPath"].as_str().unwrap_or("").len());
    let Some(mount) = mount else {
        if path.starts_with(sa_dir) && pod["automountServiceAccountToken"] != false {
            static NULL: Value = Value::Null;
            return Ok((&NULL, &NULL, String::new()));
        }
        return Err("is in no volume mount (the image holds only /usr/local/bin/infra*)".into());
    };
    let volume = items(&pod["volumes"])
        .iter()
        .find(|v| v["name"] == mount["name"])
        .ok_or_else(|| {
            format!(
                "the mount names a volume {} the pod does not have",
                mount["name"]
            )
        })?;
    let mp = mount["mountPath"]
        .as_str()
        .unwrap_or("")
        .trim_end_matches('/');
    let rel = path[mp.len()..].trim_start_matches('/').to_string();
    Ok((mount, volume, rel))
}

/// A file a flag reads is in its Secret or ConfigMap.
fn check_file_in_volume(m: &Manifest, volume: &Value, rel: &str, what: &str, p: &mut Vec<String>) {
    for (kind, src, name_field) in [
        ("Secret", &volume["secret"], "secretName"),
        ("ConfigMap", &volume["configMap"], "name"),
    ] {
        if src.is_null() {
            continue;
        }
        let name = src[name_field].as_str().unwrap_or("");
        let key = if src["items"].is_null() {
            Some(rel.split('/').next().unwrap_or("").to_string())
        } else {
            items(&src["items"])
                .iter()
                .find(|i| i["path"] == rel)
                .and_then(|i| i["key"].as_str())
                .map(str::to_string)
        };
        match key {
            None => p.push(format!("{what}: the volume's items do not include {rel:?}")),
            Some(key) if kind == "Secret" => require_secret_key(m, name, Some(&key), what, p),
            Some(key) => require_config_key(m, name, Some(&key), what, p),
        }
        return;
    }
    if !volume["emptyDir"].is_null() {
        p.push(format!(
            "{what}: is in an emptyDir, empty when the pod starts"
        ));
    }
}

/// The `--config` file, when it is a ConfigMap defined here: YAML, and its
/// `file:PATH` and `env:VAR` secrets point at mounted files and set variables.
#[allow(clippy::too_many_arguments)]
fn check_config_file(
    m: &Manifest,
    pod: &Value,
    c: &Value,
    volume: &Value,
    rel: &str,
    env_names: &BTreeSet<String>,
    what: &str,
    p: &mut Vec<String>,
) {
    let Some(cm) = volume["configMap"]["name"]
        .as_str()
        .and_then(|n| m.defined("ConfigMap", n))
    else {
        return;
    };
    let Some(text) = cm["data"][rel].as_str() else {
        return;
    };
    let config: Value = match serde_saphyr::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            p.push(format!("{what}: the config file is not YAML: {e}"));
            return;
        }
    };
    let mut strings = Vec::new();
    fn walk<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            Value::Object(o) => o.values().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&config, &mut strings);
    for s in strings {
        if let Some(path) = s.strip_prefix("file:") {
            let what = format!("{what}: {s}");
            match resolve_path(pod, c, path) {
                Err(e) => p.push(format!("{what}: {e}")),
                Ok((_, volume, rel)) => check_file_in_volume(m, volume, &rel, &what, p),
            }
        } else if let Some(var) = s.strip_prefix("env:")
            && !env_names.contains(var)
        {
            p.push(format!("{what}: {s}: the container sets no variable {var}"));
        }
    }
}

/// Commented-out arguments (`# - --flag`) and every `INFRA_*` name in a
/// comment are real too: the alternatives a comment offers must work when
/// uncommented.
fn check_comments(m: &Manifest, p: &mut Vec<String>) {
    let subs: BTreeSet<&str> = m
        .docs
        .iter()
        .filter_map(pod_template)
        .flat_map(|t| containers(&t["spec"]))
        .filter_map(infra_subcommand)
        .collect();
    let helps: Vec<(&str, &Help)> = subs
        .iter()
        .filter_map(|s| help(s).map(|h| (*s, h)))
        .collect();
    for (n, line) in m.text.lines().enumerate() {
        let Some((_, comment)) = line.split_once('#') else {
            continue;
        };
        let at = format!("{}:{}", m.name, n + 1);
        let c = comment.trim();
        if let Some(arg) = c.strip_prefix("- --") {
            let flag = format!("--{}", arg.split(['=', ' ']).next().unwrap_or(""));
            if !helps.iter().any(|(_, h)| h.opts.contains_key(&flag)) {
                p.push(format!(
                    "{at}: the commented-out {flag} is no flag of `infra {}`",
                    subs.iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("` or `infra ")
                ));
            }
        }
        for (i, _) in comment.match_indices("INFRA_") {
            let name: String = comment[i..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let wildcard = comment[i + name.len()..].starts_with('*');
            if !wildcard && !helps.iter().any(|(_, h)| h.envs().contains(name.as_str())) {
                p.push(format!(
                    "{at}: the comment names {name}, which `infra {}` does not read",
                    subs.iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("` or `infra ")
                ));
            }
        }
    }
}

#[test]
fn manifests_name_only_what_exists() {
    let mut problems = Vec::new();
    for m in manifests() {
        problems.extend(check_manifest(&m));
    }
    assert_none("the manifests", problems);
}

#[test]
fn each_manifest_runs_its_role() {
    let roles: BTreeMap<String, Vec<String>> = manifests()
        .iter()
        .map(|m| {
            let subs = m
                .docs
                .iter()
                .filter_map(pod_template)
                .flat_map(|t| containers(&t["spec"]))
                .filter_map(infra_subcommand)
                .map(str::to_string)
                .collect();
            (m.name.clone(), subs)
        })
        .collect();
    assert_eq!(roles["deploy/server.yaml"], ["server"], "{roles:?}");
    assert_eq!(roles["deploy/connector.yaml"], ["connector"], "{roles:?}");
}

#[test]
fn the_help_parser_reads_flags_env_and_defaults() {
    // What the manifest checks rest on: if clap's layout changed under
    // them, they would pass for want of anything to compare.
    let server = help("server").expect("infra server --help");
    let listen = &server.opts["--listen"];
    assert!(listen.takes_value);
    assert_eq!(listen.env.as_deref(), Some("INFRA_SERVER_LISTEN"));
    assert_eq!(listen.default.as_deref(), Some("127.0.0.1:8443"));
    assert!(!server.opts["--dev"].takes_value);
    assert_eq!(
        server.opts["--oidc-issuer-client-secret"].env.as_deref(),
        Some("INFRA_OIDC_ISSUER_CLIENT_SECRET")
    );
    let connector = help("connector").expect("infra connector --help");
    assert_eq!(
        connector.opts["--listen"].default.as_deref(),
        Some("0.0.0.0:8443")
    );
    assert_eq!(
        connector.opts["--access-key"].env.as_deref(),
        Some("INFRA_CONNECTOR_ACCESS_KEY")
    );
    assert!(connector.opts.len() > 15, "{:?}", connector.opts.keys());
    // The examples after the options (`--name prod`) do not count.
    assert!(connector.opts["--name"].takes_value);
    assert!(server.opts["--root-key-file"].takes_value);
    let parsed = parse_help(
        "Options:\n      --name <NAME>\n          The name [env: X_NAME=]\n\nExamples:\n  x --name prod\n    --flag-only-in-examples y\n",
    );
    assert!(parsed.opts["--name"].takes_value, "{parsed:?}");
    assert_eq!(parsed.opts["--name"].env.as_deref(), Some("X_NAME"));
    assert!(
        !parsed.opts.contains_key("--flag-only-in-examples"),
        "{parsed:?}"
    );
    assert!(help("no-such-role").is_none());
}

/// Breaks a copy of a manifest and expects a check to say so.
fn expect_caught(file: &str, from: &str, to: &str, want: &str) {
    let text = read(file);
    assert_eq!(
        text.matches(from).count(),
        1,
        "{file} should hold {from:?} once (update this test)"
    );
    let broken = text.replacen(from, to, 1);
    let problems = match Manifest::parse(file, broken) {
        Ok(m) => check_manifest(&m),
        Err(e) => vec![e],
    };
    assert!(
        problems.iter().any(|p| p.contains(want)),
        "{file} with {from:?} → {to:?}: want a problem containing {want:?}, got {problems:#?}"
    );
}

#[test]
fn checks_catch_broken_manifests() {
    let s = "deploy/server.yaml";
    let c = "deploy/connector.yaml";
    for (file, from, to, want) in [
        // YAML and the documents' shape
        (
            s,
            "kind: Service\n",
            "kind: Service\n  bad: [\n",
            "not YAML",
        ),
        (
            s,
            "kind: Service\n",
            "kind: Servce\n",
            "is not one this test knows",
        ),
        (
            c,
            "apiVersion: apps/v1",
            "apiVersion: v1",
            "is apiVersion apps/v1",
        ),
        (
            s,
            "  name: infra-server-data\n",
            "  name: Infra_Data\n",
            "not a Kubernetes name",
        ),
        (
            c,
            "  name: infra-connector\n  namespace: infra\n---\n# Imp",
            "  name: infra-connector\n---\n# Imp",
            "no metadata.namespace",
        ),
        (
            s,
            "#   kubectl create namespace infra\n",
            "#\n",
            "nor made in the header",
        ),
        // the image
        (
            s,
            "image: infra:",
            "image: ghcr.io/example/infra:",
            "the image the README documents",
        ),
        (
            c,
            "image: infra:",
            "image: infra:9",
            "the image the README documents",
        ),
        // flags and variables
        (
            s,
            "- --data-dir=/var/lib/infra",
            "- --datadir=/var/lib/infra",
            "has no flag --datadir",
        ),
        (c, "- --name=prod", "- --name", "--name needs a value"),
        (
            c,
            "- --server=https://infra.example.com",
            "- https://infra.example.com",
            "is not a --flag",
        ),
        (
            c,
            "name: INFRA_CONNECTOR_ACCESS_KEY",
            "name: INFRA_CONNECTOR_KEY",
            "names no variable INFRA_CONNECTOR_KEY",
        ),
        (s, "- server\n", "- servr\n", "is not a subcommand"),
        (
            s,
            "# - --trusted-proxies=",
            "# - --trusted-proxy=",
            "commented-out --trusted-proxy is no flag",
        ),
        (
            s,
            "name: INFRA_DB\n",
            "name: INFRA_DB_URL\n",
            "names INFRA_DB_URL",
        ),
        (
            c,
            "kubectl -n infra create secret",
            "kubectl create secret",
            "the header makes the Secret infra-connector in the current namespace",
        ),
        (
            s,
            "          args:\n            - server",
            "          command: [infra]\n          args:\n            - server",
            "sets command",
        ),
        // what the manifest refers to
        (
            c,
            "secretKeyRef: {name: infra-connector, key: access-key}",
            "secretKeyRef: {name: infra-connector, key: accesskey}",
            "reads the key \"accesskey\"",
        ),
        (
            c,
            "secretKeyRef: {name: infra-connector,",
            "secretKeyRef: {name: infra-connectr,",
            "names the Secret \"infra-connectr\"",
        ),
        (
            c,
            "--from-file=server-ca.crt=",
            "--from-file=ca.crt=",
            "reads the key \"server-ca.crt\"",
        ),
        (
            s,
            "claimName: infra-server-data",
            "claimName: infra-data",
            "names the PersistentVolumeClaim \"infra-data\"",
        ),
        (
            s,
            "configMap: {name: infra-server}",
            "configMap: {name: infra-config}",
            "names the ConfigMap \"infra-config\"",
        ),
        (
            c,
            "serviceAccountName: infra-connector",
            "serviceAccountName: infra",
            "names the ServiceAccount \"infra\"",
        ),
        (
            c,
            "  kind: ClusterRole\n  name: infra-connector",
            "  kind: ClusterRole\n  name: infra-connectors",
            "names the ClusterRole \"infra-connectors\"",
        ),
        (
            s,
            "- --root-key-file=/etc/infra/secret/root.key",
            "- --root-key-file=/etc/infra/secret/root-key",
            "reads the key \"root-key\"",
        ),
        (
            s,
            "- --root-key-file=/etc/infra/secret/root.key",
            "- --root-key-file=/run/root.key",
            "is in no volume mount",
        ),
        (
            s,
            "- --config=/etc/infra/config/infra.yaml",
            "- --config=/etc/infra/config/config.yaml",
            "has no key config.yaml",
        ),
        (
            s,
            "adminAccessKey: file:/etc/infra/secret/admin-access-key",
            "adminAccessKey: file:/etc/infra/secret/admin-key",
            "reads the key \"admin-key\"",
        ),
        (
            s,
            "adminAccessKey: file:/etc/infra/secret/admin-access-key",
            "adminAccessKey: env:ADMIN_KEY",
            "sets no variable ADMIN_KEY",
        ),
        (
            s,
            "{name: data, mountPath: /var/lib/infra}",
            "{name: data, mountPath: /var/lib/infra, readOnly: true}",
            "must be a writable",
        ),
        // Services, selectors, ports and probes
        (
            s,
            "  selector: {app: infra-server}\n  ports",
            "  selector: {app: infra}\n  ports",
            "matches no pod template",
        ),
        (
            c,
            "    matchLabels: {app: infra-connector}",
            "    matchLabels: {app: connector}",
            "is not among the pod labels",
        ),
        (
            s,
            "targetPort: https}",
            "targetPort: http}",
            "targetPort \"http\" is no container port",
        ),
        (
            s,
            "targetPort: https}",
            "targetPort: metrics}",
            "private --metrics-listen port",
        ),
        (
            c,
            "httpGet: {path: /healthz, port: metrics}\n          livenessProbe",
            "httpGet: {path: /healthz, port: metric}\n          livenessProbe",
            "readinessProbe port \"metric\" is no container port",
        ),
        (
            s,
            "readinessProbe:\n            httpGet: {path: /healthz, port: https, scheme: HTTPS}",
            "readinessProbe:\n            httpGet: {path: /healthz, port: https}",
            "over HTTP, but --listen serves HTTPS",
        ),
        (
            c,
            "livenessProbe:\n            httpGet: {path: /healthz, port: metrics}",
            "livenessProbe:\n            httpGet: {path: /health, port: metrics}",
            "is not /healthz",
        ),
        (
            s,
            "            - --listen=0.0.0.0:8443\n",
            "",
            "not reachable from outside the pod",
        ),
        (
            c,
            "- --metrics-listen=0.0.0.0:9465",
            "- --metrics-listen=0.0.0.0:9466",
            "containerPort 9465 (\"metrics\") is no address",
        ),
        // locked down
        (
            s,
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystem: false",
            "readOnlyRootFilesystem is not true",
        ),
        (
            c,
            "capabilities: {drop: [ALL]}",
            "capabilities: {drop: [NET_RAW]}",
            "do not drop ALL",
        ),
        (s, "        runAsNonRoot: true\n", "", "runAsNonRoot: true"),
        (
            c,
            "seccompProfile: {type: RuntimeDefault}",
            "seccompProfile: {type: Unconfined}",
            "seccompProfile is not RuntimeDefault",
        ),
        (
            c,
            "allowPrivilegeEscalation: false",
            "allowPrivilegeEscalation: true",
            "allowPrivilegeEscalation",
        ),
        (
            s,
            "requests: {cpu: 100m, memory: 128Mi}",
            "requests: {memory: 128Mi}",
            "no cpu request",
        ),
        (
            s,
            "      enableServiceLinks: false\n",
            "",
            "enableServiceLinks",
        ),
        (
            s,
            "strategy: {type: Recreate}",
            "strategy: {type: RollingUpdate}",
            "needs strategy Recreate",
        ),
        (
            s,
            "  replicas: 1 ",
            "  replicas: 3 ",
            "more than one replica",
        ),
    ] {
        expect_caught(file, from, to, want);
    }
}

// ---------------------------------------------------------------------------
// The Dockerfile, .dockerignore, and the one image name.
// ---------------------------------------------------------------------------

struct Instr {
    cmd: String,
    args: String,
}

/// Instructions, with continuation lines joined and comments dropped.
fn dockerfile_instructions(text: &str) -> Vec<Instr> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        if let Some(body) = t.strip_suffix('\\') {
            cur.push_str(body);
            cur.push(' ');
            continue;
        }
        cur.push_str(t);
        let full = std::mem::take(&mut cur);
        let (cmd, args) = full.split_once(char::is_whitespace).unwrap_or((&full, ""));
        out.push(Instr {
            cmd: cmd.to_ascii_uppercase(),
            args: args.trim().to_string(),
        });
    }
    out
}

/// `cargo metadata` of this package.
fn metadata() -> &'static Value {
    static META: OnceLock<Value> = OnceLock::new();
    META.get_or_init(|| {
        let out = Command::new(env!("CARGO"))
            .args([
                "metadata",
                "--no-deps",
                "--offline",
                "--format-version",
                "1",
            ])
            .current_dir(repo())
            .output()
            .expect("cargo metadata");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == env!("CARGO_PKG_NAME"))
            .cloned()
            .expect("this package in cargo metadata")
    })
}

/// Cargo.toml's `[[bin]]` targets: what the image must hold.
fn shipped_bins() -> Vec<String> {
    let bins: Vec<String> = items(&metadata()["targets"])
        .iter()
        .filter(|t| items(&t["kind"]).iter().any(|k| k == "bin"))
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect();
    assert!(
        bins.iter().any(|b| b == "infra") && bins.iter().any(|b| b == "infra-credential"),
        "cargo metadata's bin targets: {bins:?}"
    );
    bins
}

fn version_at_least(have: &str, need: &str) -> bool {
    let parse = |s: &str| -> Vec<u64> { s.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    let (have, need) = (parse(have), parse(need));
    for i in 0..need.len().max(have.len()) {
        let (h, n) = (
            have.get(i).copied().unwrap_or(0),
            need.get(i).copied().unwrap_or(0),
        );
        if h != n {
            return h > n;
        }
    }
    true
}

/// The `-t NAME` of every `docker build` in a text.
fn build_tags(text: &str) -> Vec<String> {
    let mut tags = Vec::new();
    for line in text.lines().filter(|l| l.contains("docker build")) {
        let words = shell_words(line.split("docker build").nth(1).unwrap_or(""));
        for (i, w) in words.iter().enumerate() {
            if w == "-t" || w == "--tag" {
                tags.extend(words.get(i + 1).cloned());
            } else if let Some(t) = w.strip_prefix("--tag=") {
                tags.push(t.to_string());
            }
        }
    }
    tags
}

fn check_dockerfile(text: &str) -> Vec<String> {
    let mut p = Vec::new();
    let meta = metadata();
    let instrs = dockerfile_instructions(text);
    let global_args: BTreeMap<String, String> = instrs
        .iter()
        .take_while(|i| i.cmd != "FROM")
        .filter(|i| i.cmd == "ARG")
        .filter_map(|i| i.args.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let expand = |s: &str| {
        global_args.iter().fold(s.to_string(), |s, (k, v)| {
            s.replace(&format!("${{{k}}}"), v)
                .replace(&format!("${k}"), v)
        })
    };
    // Stages: (name, base image, instructions).
    let mut stages: Vec<(String, String, Vec<&Instr>)> = Vec::new();
    for i in &instrs {
        if i.cmd == "FROM" {
            let words: Vec<&str> = i
                .args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let image = expand(words.first().unwrap_or(&""));
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => name.to_string(),
                _ => stages.len().to_string(),
            };
            stages.push((name, image, Vec::new()));
        } else if let Some(s) = stages.last_mut() {
            s.2.push(i);
        }
    }
    if stages.len() < 2 {
        p.push(format!(
            "{} FROM: not a multi-stage build (a builder and a small final stage)",
            stages.len()
        ));
        return p;
    }
    let (_, base, fin) = stages.last().unwrap();

    // The final stage: non-root, both executables side by side, infra first.
    let user = fin
        .iter()
        .rfind(|i| i.cmd == "USER")
        .map(|i| i.args.clone());
    match &user {
        Some(u) => {
            let name = u.split(':').next().unwrap_or("");
            if name == "root" || name == "0" || name.is_empty() {
                p.push(format!("the final USER {u} is root"));
            } else if !u
                .split(':')
                .all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
            {
                // The kubelet can check runAsNonRoot only against a number.
                p.push(format!("the final USER {u} is not numeric (UID[:GID])"));
            }
        }
        None if !base.ends_with(":nonroot") => {
            p.push(format!("the final stage ({base}) sets no non-root USER"))
        }
        None => {}
    }
    let copy = fin
        .iter()
        .find(|i| i.cmd == "COPY" && i.args.starts_with("--from="));
    let mut bin_dir = None;
    match copy {
        None => p.push("the final stage copies nothing from a builder stage".into()),
        Some(c) => {
            let words: Vec<&str> = c.args.split_whitespace().collect();
            let from = words[0].trim_start_matches("--from=");
            let srcs = &words[1..words.len().saturating_sub(1)];
            let dest = words.last().copied().unwrap_or("");
            for exe in shipped_bins() {
                if !srcs
                    .iter()
                    .any(|s| s.rsplit('/').next() == Some(exe.as_str()))
                {
                    p.push(format!(
                        "the final stage does not copy {exe} (every [[bin]] of Cargo.toml ships)"
                    ));
                }
            }
            if !dest.ends_with('/') {
                p.push(format!(
                    "COPY to {dest}: both executables go into one directory (dest ending in /)"
                ));
            }
            bin_dir = Some(dest.trim_end_matches('/').to_string());
            match stages.iter().find(|s| s.0 == from) {
                None => p.push(format!("COPY --from={from}: no such stage")),
                Some((_, builder, steps)) => {
                    let rust = builder
                        .strip_prefix("rust:")
                        .map(|t| t.split('-').next().unwrap_or(""));
                    let need = meta["rust_version"].as_str().unwrap_or("0");
                    match rust {
                        None => p.push(format!(
                            "the builder {builder} is not an official rust image"
                        )),
                        Some(v) if !v.chars().next().is_some_and(|c| c.is_ascii_digit()) => {
                            p.push(format!("the builder {builder} pins no Rust version"))
                        }
                        Some(v) if !version_at_least(v, need) => p.push(format!(
                            "the builder's Rust {v} is older than the crate's rust-version {need}"
                        )),
                        Some(_) => {}
                    }
                    let build = steps.iter().any(|i| {
                        i.cmd == "RUN"
                            && i.args.contains("cargo build")
                            && ["--release", "--locked", "--bins"]
                                .iter()
                                .all(|f| i.args.split_whitespace().any(|w| w == *f))
                    });
                    if !build {
                        p.push(
                            "the builder does not run `cargo build --release --locked --bins`"
                                .into(),
                        );
                    }
                }
            }
        }
    }
    match fin.iter().rfind(|i| i.cmd == "ENTRYPOINT") {
        None => p.push("no ENTRYPOINT in the final stage".into()),
        Some(e) => match serde_json::from_str::<Vec<String>>(&e.args) {
            Err(_) => p.push(format!(
                "ENTRYPOINT {} is not the exec form (no shell in the image)",
                e.args
            )),
            Ok(v) => {
                let ok = v.len() == 1
                    && (v[0] == "infra"
                        || Some(v[0].as_str())
                            == bin_dir.as_ref().map(|d| format!("{d}/infra")).as_deref());
                if !ok {
                    p.push(format!("ENTRYPOINT {v:?} is not the copied infra"));
                }
            }
        },
    }

    // Labels: version from a build argument defaulting to the crate's,
    // the crate's licence, the source.
    let labels: String = fin
        .iter()
        .filter(|i| i.cmd == "LABEL")
        .map(|i| i.args.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let label = |k: &str| {
        labels
            .split_once(&format!("{k}="))
            .map(|(_, v)| shell_words(v).into_iter().next().unwrap_or_default())
    };
    match label("org.opencontainers.image.version") {
        Some(v) if v == "${VERSION}" => {
            let default = fin
                .iter()
                .filter(|i| i.cmd == "ARG")
                .find_map(|i| i.args.strip_prefix("VERSION="));
            if default != Some(env!("CARGO_PKG_VERSION")) {
                p.push(format!(
                    "ARG VERSION defaults to {default:?}, not the crate's {}",
                    env!("CARGO_PKG_VERSION")
                ));
            }
        }
        v => p.push(format!(
            "the version label is {v:?}, not ${{VERSION}} (a build argument)"
        )),
    }
    let license = meta["license"].as_str().unwrap_or("");
    if label("org.opencontainers.image.licenses").as_deref() != Some(license) {
        p.push(format!("the licenses label is not the crate's {license}"));
    }
    if label("org.opencontainers.image.source").is_none() {
        p.push("no org.opencontainers.image.source label".into());
    }

    // rustls only, nowhere OpenSSL.
    for i in &instrs {
        let args = i.args.to_ascii_lowercase();
        if args.contains("openssl") || args.contains("libssl") {
            p.push(format!(
                "{} {} brings OpenSSL in (the project uses rustls)",
                i.cmd, i.args
            ));
        }
    }
    let tags = build_tags(text);
    if tags.is_empty() || tags.iter().any(|t| t != IMAGE) {
        p.push(format!(
            "the Dockerfile's `docker build -t` names {tags:?}, not {IMAGE}"
        ));
    }
    p
}

#[test]
fn the_dockerfile_builds_a_small_non_root_image_of_both_executables() {
    assert_none("Dockerfile", check_dockerfile(&read("Dockerfile")));
}

#[test]
fn no_openssl_in_the_dependency_tree() {
    let lock = read("Cargo.lock");
    for krate in ["openssl", "openssl-sys", "native-tls"] {
        assert!(
            !lock.contains(&format!("name = \"{krate}\"\n")),
            "Cargo.lock holds {krate}: the image's final stage has no OpenSSL (rustls only)"
        );
    }
}

#[test]
fn checks_catch_broken_dockerfiles() {
    let good = read("Dockerfile");
    for (from, to, want) in [
        ("FROM rust:", "# FROM rust:", "not a multi-stage build"),
        ("USER 65532:65532", "USER root", "is root"),
        ("USER 65532:65532", "USER 0", "is root"),
        ("USER 65532:65532", "USER nonroot", "is not numeric"),
        ("USER 65532:65532", "USER 65532:nonroot", "is not numeric"),
        ("cc-debian12:nonroot", "cc-debian12", "Dockerfile"),
        (
            "/out/infra /out/infra-credential",
            "/out/infra",
            "does not copy infra-credential",
        ),
        (
            "--locked --bins",
            "--bins",
            "cargo build --release --locked --bins",
        ),
        (
            "ARG RUST_VERSION=1.95.0",
            "ARG RUST_VERSION=1.80.0",
            "older than the crate's rust-version",
        ),
        (
            "ARG RUST_VERSION=1.95.0",
            "ARG RUST_VERSION=latest",
            "pins no Rust version",
        ),
        (
            "ENTRYPOINT [\"/usr/local/bin/infra\"]",
            "ENTRYPOINT /usr/local/bin/infra",
            "not the exec form",
        ),
        (
            "ENTRYPOINT [\"/usr/local/bin/infra\"]",
            "ENTRYPOINT [\"/usr/local/bin/infra-credential\"]",
            "is not the copied infra",
        ),
        (
            "ARG VERSION=0.1.0",
            "ARG VERSION=0.0.9",
            "ARG VERSION defaults to",
        ),
        (
            "licenses=\"Apache-2.0\"",
            "licenses=\"MIT\"",
            "licenses label",
        ),
        (
            "cargo build",
            "apt-get install -y libssl-dev && cargo build",
            "OpenSSL",
        ),
        (
            "docker build -t infra:",
            "docker build -t infra-server:",
            "docker build -t",
        ),
    ] {
        assert_eq!(
            good.matches(from).count(),
            1,
            "Dockerfile should hold {from:?} once"
        );
        let mut problems = check_dockerfile(&good.replacen(from, to, 1));
        if from == "cc-debian12:nonroot" {
            // A USER still makes it non-root: only both gone is a problem.
            assert!(problems.is_empty(), "{problems:?}");
            problems =
                check_dockerfile(&good.replacen(from, to, 1).replace("USER 65532:65532\n", ""));
            assert!(
                problems.iter().any(|p| p.contains("sets no non-root USER")),
                "{problems:?}"
            );
            continue;
        }
        assert!(
            problems.iter().any(|p| p.contains(want)),
            "Dockerfile with {from:?} → {to:?}: want {want:?}, got {problems:#?}"
        );
    }
}

/// Whether `.dockerignore` leaves `path` (relative, `/`-separated) out of
/// the build context: Docker's rules, for the patterns used here (`*`, `?`,
/// `**`, a leading `/`, `!` to bring back; a match on a directory takes
/// everything under it).
fn docker_ignores(patterns: &str, path: &str) -> bool {
    fn seg_match(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => seg_match(&p[1..], s) || (!s.is_empty() && seg_match(p, &s[1..])),
            (Some(b'?'), Some(_)) => seg_match(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => seg_match(&p[1..], &s[1..]),
            _ => false,
        }
    }
    fn path_match(p: &[&str], s: &[&str]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(&"**"), _) => path_match(&p[1..], s) || (!s.is_empty() && path_match(p, &s[1..])),
            (Some(a), Some(b)) => {
                seg_match(a.as_bytes(), b.as_bytes()) && path_match(&p[1..], &s[1..])
            }
            _ => false,
        }
    }
    let parts: Vec<&str> = path.split('/').collect();
    let mut ignored = false;
    for line in patterns.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (negate, pat) = match line.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, line),
        };
        let pat: Vec<&str> = pat
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .collect();
        let hit = (1..=parts.len()).any(|n| path_match(&pat, &parts[..n]));
        if hit {
            ignored = !negate;
        }
    }
    ignored
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            files_under(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

fn check_dockerignore(patterns: &str) -> Vec<String> {
    let mut p = Vec::new();
    // What cargo reads: the manifest, the lock file, every target's source
    // (Cargo.toml's [[test]] and [[bench]] must exist for it to parse), the
    // library and binaries' modules, the migrations sqlx embeds.
    let mut needed: BTreeSet<String> = ["Cargo.toml", "Cargo.lock"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for t in items(&metadata()["targets"]) {
        let src = t["src_path"].as_str().unwrap_or("");
        if let Ok(rel) = Path::new(src).strip_prefix(repo()) {
            needed.insert(rel.to_string_lossy().into_owned());
        }
    }
    for dir in ["src", "migrations"] {
        let mut files = Vec::new();
        files_under(&repo().join(dir), &mut files);
        for f in files {
            needed.insert(
                f.strip_prefix(repo())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    for f in &needed {
        if docker_ignores(patterns, f) {
            p.push(format!("leaves out {f}, which `cargo build` reads"));
        }
    }
    for f in [
        "target/release/infra",
        "target/debug/deps/libinfra.rlib",
        ".git",
        "tests/.venv/bin/python",
        "tests/.run/log",
        "tests/oidc/node_modules/oidc-provider/package.json",
    ] {
        if !docker_ignores(patterns, f) {
            p.push(format!("sends {f} into the build context"));
        }
    }
    p
}

#[test]
fn the_build_context_has_what_cargo_reads_and_nothing_bulky() {
    assert_none(".dockerignore", check_dockerignore(&read(".dockerignore")));
}

#[test]
fn checks_catch_broken_dockerignores() {
    let good = read(".dockerignore");
    assert!(docker_ignores("**/node_modules", "a/b/node_modules/c"));
    assert!(!docker_ignores("target", "src/target.rs"));
    assert!(docker_ignores("*.md", "README.md"));
    assert!(!docker_ignores("*.md\n!README.md", "README.md"));
    for (change, want) in [
        (format!("{good}tests\n"), "leaves out tests/credentials.rs"),
        (format!("{good}benches\n"), "leaves out benches/api.rs"),
        (
            format!("{good}**/*.sql\n"),
            "leaves out migrations/0001_initial.sql",
        ),
        (
            format!("{good}src/bin\n"),
            "leaves out src/bin/infra-credential.rs",
        ),
        (format!("{good}Cargo.lock\n"), "leaves out Cargo.lock"),
        (
            good.replace("\ntarget\n", "\n").replace("**/target\n", ""),
            "sends target/release/infra",
        ),
        (good.replace("tests/.venv\n", ""), "sends tests/.venv"),
        (
            good.replace("**/node_modules\n", ""),
            "sends tests/oidc/node_modules",
        ),
    ] {
        let problems = check_dockerignore(&change);
        assert!(
            problems.iter().any(|p| p.contains(want)),
            "want {want:?}, got {problems:#?}"
        );
    }
}

#[test]
fn one_image_name_in_the_readme_dockerfile_and_manifests() {
    let readme = read("README.md");
    let tags = build_tags(&readme);
    assert!(
        !tags.is_empty() && tags.iter().all(|t| t == IMAGE),
        "the README's `docker build -t` names {tags:?}, want {IMAGE}"
    );
    assert!(
        readme.contains(&format!("`{IMAGE}`")),
        "the README names the image `{IMAGE}`"
    );
    for n in manifest_names() {
        let tags = build_tags(&header(&read(&n)));
        assert!(
            !tags.is_empty() && tags.iter().all(|t| t == IMAGE),
            "{n}'s header `docker build -t` names {tags:?}, want {IMAGE}"
        );
    }
    let mut images = BTreeSet::new();
    for m in manifests() {
        for t in m.docs.iter().filter_map(pod_template) {
            images.extend(
                containers(&t["spec"]).map(|c| c["image"].as_str().unwrap_or("").to_string()),
            );
        }
    }
    assert_eq!(images, BTreeSet::from([IMAGE.to_string()]));
}

// ---------------------------------------------------------------------------
// deploy/server.yaml, run: its header's commands, its arguments, its files.
// ---------------------------------------------------------------------------

/// Runs the header's command lines (indented `#   `) in bash, with
/// `kubectl` and `infra` recording their arguments instead of running;
/// returns each recorded call.
fn run_header(header: &str, dir: &Path) -> Vec<Vec<String>> {
    let commands: Vec<&str> = header
        .lines()
        .filter(|l| l.starts_with("  ") && !l.trim().is_empty())
        .collect();
    let log = dir.join("calls");
    let script = format!(
        "set -eu\n\
         record() {{ printf '%s\\0' \"$@\" >>\"$CALLS\"; printf '\\n\\0' >>\"$CALLS\"; }}\n\
         kubectl() {{ record kubectl \"$@\"; }}\n\
         infra() {{ record infra \"$@\"; }}\n\
         {}\n",
        commands.join("\n")
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("CALLS", &log)
        .current_dir(dir)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "the header's commands failed:\n{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = std::fs::read(&log).unwrap_or_default();
    String::from_utf8(calls)
        .unwrap()
        .split("\n\0")
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.split('\0')
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_manifest_boots_as_written() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let m = Manifest::parse("deploy/server.yaml", read("deploy/server.yaml")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();

    // The Secrets, as the header's `kubectl create secret` lines make them.
    let mut secrets: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for call in run_header(&header(&m.text), root) {
        let words: Vec<&str> = call.iter().map(String::as_str).collect();
        let Some(i) = words.windows(2).position(|w| w == ["create", "secret"]) else {
            continue;
        };
        let Some(name) = words.get(i + 3) else {
            continue;
        };
        let data = secrets.entry(name.to_string()).or_default();
        for w in &words[i + 4..] {
            if let Some((k, v)) = w
                .strip_prefix("--from-literal=")
                .and_then(|kv| kv.split_once('='))
            {
                data.insert(k.to_string(), v.to_string());
            }
        }
    }

    let deployment = m
        .defined("Deployment", "infra-server")
        .expect("the Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let c = &pod["containers"][0];

    // Each volume a directory here, filled as Kubernetes would; the pod's
    // paths, in arguments and in the config file's `file:` secrets, point
    // at them.
    let mut mounts: Vec<(String, PathBuf)> = items(&c["volumeMounts"])
        .iter()
        .map(|vm| {
            let dir = root.join("volumes").join(vm["name"].as_str().unwrap());
            std::fs::create_dir_all(&dir).unwrap();
            (vm["mountPath"].as_str().unwrap().to_string(), dir)
        })
        .collect();
    mounts.sort_by_key(|(mp, _)| std::cmp::Reverse(mp.len()));
    let local = |path: &str| -> String {
        for (mp, dir) in &mounts {
            if let Some(rest) = path.strip_prefix(mp.as_str()) {
                return format!("{}{rest}", dir.display());
            }
        }
        path.to_string()
    };
    for vm in items(&c["volumeMounts"]) {
        let name = vm["name"].as_str().unwrap();
        let dir = local(vm["mountPath"].as_str().unwrap());
        let dir = Path::new(&dir);
        let v = items(&pod["volumes"])
            .iter()
            .find(|v| v["name"] == name)
            .unwrap();
        if let Some(s) = v["secret"]["secretName"].as_str() {
            let data = secrets
                .get(s)
                .unwrap_or_else(|| panic!("the header makes no Secret {s}"));
            for (k, val) in data {
                std::fs::write(dir.join(k), val).unwrap();
            }
        }
        if let Some(cm) = v["configMap"]["name"].as_str() {
            let cm = m.defined("ConfigMap", cm).expect("the ConfigMap");
            for (k, val) in cm["data"].as_object().unwrap() {
                // Each `file:PATH` made local once (a path already made
                // local may start with another mount's path, e.g. /tmp).
                let text = val.as_str().unwrap();
                let mut out = String::new();
                let mut rest = text;
                while let Some(i) = rest.find("file:/") {
                    out.push_str(&rest[..i + "file:".len()]);
                    rest = &rest[i + "file:".len()..];
                    let end = rest
                        .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
                        .unwrap_or(rest.len());
                    out.push_str(&local(&rest[..end]));
                    rest = &rest[end..];
                }
                out.push_str(rest);
                std::fs::write(dir.join(k), out).unwrap();
            }
        }
    }

    // The manifest's arguments, with its mount paths and listen addresses
    // made local (the ports it listens on are the pod's own).
    let help = help("server").unwrap();
    let mut ports: BTreeMap<u16, u16> = BTreeMap::new();
    let mut args = Vec::new();
    for a in items(&c["args"]).iter().map(|a| a.as_str().unwrap()) {
        match a.split_once('=') {
            Some((flag @ ("--listen" | "--metrics-listen"), addr)) => {
                let addr: SocketAddr = addr.parse().unwrap();
                let port = free_port();
                ports.insert(addr.port(), port);
                args.push(format!("{flag}=127.0.0.1:{port}"));
            }
            Some((flag, v)) => args.push(format!("{flag}={}", local(v))),
            None => args.push(a.to_string()),
        }
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_infra"));
    cmd.args(&args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", root.join("home"))
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(root.join("server.log")).unwrap());
    for e in items(&c["env"]) {
        let name = e["name"].as_str().unwrap();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else {
            let r = &e["valueFrom"]["secretKeyRef"];
            secrets[r["name"].as_str().unwrap()][r["key"].as_str().unwrap()].clone()
        };
        assert!(help.flag_of_env(name).is_some() || !name.starts_with("INFRA_"));
        cmd.env(name, value);
    }
    let mut child = cmd.spawn().expect("start infra server");
    let log = || std::fs::read_to_string(root.join("server.log")).unwrap_or_default();

    // The probes, as the kubelet asks them (it does not check certificates).
    let kubelet = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let port_of = |port: &Value| -> u16 {
        let cp = container_port(c, port).expect("the probe's port");
        ports[&(cp["containerPort"].as_u64().unwrap() as u16)]
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    for kind in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let get = &c[kind]["httpGet"];
        if get.is_null() {
            continue;
        }
        let url = format!(
            "{}://127.0.0.1:{}{}",
            get["scheme"]
                .as_str()
                .unwrap_or("HTTP")
                .to_ascii_lowercase(),
            port_of(&get["port"]),
            get["path"].as_str().unwrap()
        );
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "the server exited ({status}) before {kind} {url} answered:\n{}",
                    log()
                );
            }
            match kubelet.get(&url).send().await {
                Ok(r) if r.status().is_success() => break,
                _ if Instant::now() > deadline => {
                    let _ = child.kill();
                    panic!("{kind} {url} did not answer 200:\n{}", log());
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    // The admin key the header made logs in; the log shows the fingerprint
    // the header tells the reader to look for.
    let config = &m.defined("ConfigMap", "infra-server").unwrap()["data"]["infra.yaml"];
    let config: Value = serde_saphyr::from_str(config.as_str().unwrap()).unwrap();
    let key_file = config["adminAccessKey"]
        .as_str()
        .unwrap()
        .strip_prefix("file:")
        .unwrap();
    let key = std::fs::read_to_string(local(key_file)).unwrap();
    let https = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "https")
        .unwrap();
    let url = format!(
        "https://127.0.0.1:{}/api/login",
        ports[&(https["containerPort"].as_u64().unwrap() as u16)]
    );
    let resp = kubelet
        .post(&url)
        .header("Infra-Version", env!("CARGO_PKG_VERSION"))
        .json(&serde_json::json!({"accessKey": key}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert!(
        status.is_success(),
        "login with the header's admin key: {status} {body}\n{}",
        log()
    );
    assert!(
        log().contains("TLS certificate SHA-256 fingerprint: "),
        "{}",
        log()
    );

    // Kubernetes stops a pod with SIGTERM, and kills it after 30 s.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server did not stop within 30 s of SIGTERM:\n{}", log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        status.success(),
        "the server stopped with {status}:\n{}",
        log()
    );
}
