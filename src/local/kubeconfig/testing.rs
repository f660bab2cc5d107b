//! What the tests of the parts share: servers, a kubeconfig infra did not
//! write, and helpers to build wanted entries and look into documents.

use std::path::Path;

use super::InfraCluster;
use super::entries::{Destination, wanted_entries};
use super::merge::infra_name;
use super::yaml::{LISTS, Yaml, list, parse, to_yaml};

pub(super) const A: &str = "a.example:8443";
pub(super) const B: &str = "b.example:8443";
pub(super) const EXE: &str = "/usr/local/bin/infra";
pub(super) const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";

/// A kubeconfig infra did not write, with values a careless rewrite
/// would change: strings that look like booleans, numbers or nulls,
/// unquoted YAML 1.1 booleans and octals, multi-line and long strings.
pub(super) const FOREIGN: &str = r#"# my clusters
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
    extensions:
    - name: tricky
      extension:
        quoted-yes: "yes"
        quoted-no: 'no'
        quoted-on: "on"
        quoted-octal: "0123"
        quoted-version: "1.10"
        quoted-null: "null"
        quoted-tilde: "~"
        quoted-empty: ""
        quoted-date: "2001-12-14"
        quoted-exp: "1e3"
        plain-yes: yes
        plain-octal: 0123
        plain-version: 1.10
        plain-null:
        plain-int: 42
        big: 18446744073709551615
        multi: "line one\nline two\n"
        long: "a long sentence with spaces that goes on and on and on, well past eighty characters, to tempt a folding writer"
        special: "key: value # not a comment"
        list: [a, "1", 1, true, "true"]
        1: int key
- name: infra:orphan
  cluster:
    server: https://orphan.example
contexts:
- name: kind-kind
  context:
    cluster: kind-kind
    user: kind-kind
    namespace: "true"
users:
- name: kind-kind
  user:
    client-certificate-data: Y2VydA==
    client-key-data: a2V5
current-context: kind-kind
"#;

pub(super) fn doc(text: &str) -> Yaml {
    parse(text).unwrap()
}

pub(super) fn cl(dest: &str, ns: Option<&str>) -> InfraCluster {
    InfraCluster {
        destination: dest.into(),
        namespace: ns.map(Into::into),
        url: format!("https://{dest}.connector.example:8443"),
        ca_pem: CA.into(),
    }
}

pub(super) fn want(server: &str, clusters: &[InfraCluster]) -> Vec<Destination> {
    wanted_entries(server, EXE, clusters).unwrap()
}

pub(super) fn names(doc: &Yaml, key: &str) -> Vec<String> {
    list(doc, key)
        .iter()
        .map(|e| e.str_at(&["name"]).unwrap_or("?").to_string())
        .collect()
}

pub(super) fn entry<'a>(doc: &'a Yaml, key: &str, name: &str) -> &'a Yaml {
    list(doc, key)
        .iter()
        .find(|e| e.str_at(&["name"]) == Some(name))
        .unwrap_or_else(|| panic!("no {key} entry {name}"))
}

pub(super) fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Everything but the `infra:*` entries.
pub(super) fn without_infra(doc: &Yaml) -> Yaml {
    let Yaml::Map(pairs) = doc else { panic!() };
    Yaml::Map(
        pairs
            .iter()
            .map(|(k, v)| match (k.as_str(), v) {
                (Some(key), Yaml::Seq(items)) if LISTS.contains(&key) => (
                    k.clone(),
                    Yaml::Seq(
                        items
                            .iter()
                            .filter(|e| infra_name(e).is_none())
                            .cloned()
                            .collect(),
                    ),
                ),
                _ => (k.clone(), v.clone()),
            })
            .collect(),
    )
}

/// Serialized and parsed again, as the next run reads it.
pub(super) fn round_trip(doc: &Yaml) -> Yaml {
    parse(&to_yaml(doc).unwrap()).unwrap()
}

pub(super) fn mode(p: &Path) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }
    #[cfg(not(unix))]
    {
        let _ = p;
        0o600
    }
}

pub(super) fn read_doc(p: &Path) -> Yaml {
    doc(&std::fs::read_to_string(p).unwrap())
}
