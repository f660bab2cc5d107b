//! The entries infra writes for one server: per destination a cluster and
//! a user whose credential comes from `infra tokens create` (both named
//! `infra:DEST`), and a context per namespace, built from the destinations
//! the user may reach ([`wanted_entries`]).

use anyhow::bail;
use base64::Engine;

use super::yaml::Yaml;
use super::{InfraCluster, PREFIX, context_name};

/// The entries for one destination: its cluster and user (both named
/// `infra:DEST`) and its contexts.
#[derive(Debug, Clone)]
pub(super) struct Destination {
    pub(super) name: String,
    pub(super) cluster: Yaml,
    pub(super) user: Yaml,
    pub(super) contexts: Vec<(String, Yaml)>,
}

pub(super) fn wanted_entries(
    server: &str,
    exe: &str,
    clusters: &[InfraCluster],
) -> anyhow::Result<Vec<Destination>> {
    if server.is_empty() {
        bail!("cannot write kubeconfig entries for an empty server name");
    }
    let mut out: Vec<Destination> = Vec::new();
    for c in clusters {
        if c.destination.is_empty() {
            bail!("cannot write kubeconfig entries for a destination with an empty name");
        }
        let name = format!("{PREFIX}{}", c.destination);
        let i = match out.iter().position(|d| d.name == name) {
            Some(i) => i,
            None => {
                // The first item of a destination gives its URL and CA.
                let mut cluster = vec![(Yaml::str("server"), Yaml::str(&c.url))];
                if !c.ca_pem.is_empty() {
                    cluster.push((
                        Yaml::str("certificate-authority-data"),
                        Yaml::Str(base64::engine::general_purpose::STANDARD.encode(&c.ca_pem)),
                    ));
                }
                let args = [
                    "tokens",
                    "create",
                    "--server",
                    server,
                    "--destination",
                    &c.destination,
                ];
                let exec = Yaml::map([
                    ("apiVersion", Yaml::str("client.authentication.k8s.io/v1")),
                    ("command", Yaml::str(exe)),
                    (
                        "args",
                        Yaml::Seq(args.iter().map(|a| Yaml::str(a)).collect()),
                    ),
                    ("interactiveMode", Yaml::str("Never")),
                    ("provideClusterInfo", Yaml::Bool(true)),
                ]);
                out.push(Destination {
                    name: name.clone(),
                    cluster: Yaml::map([
                        ("name", Yaml::str(&name)),
                        ("cluster", Yaml::Map(cluster)),
                    ]),
                    user: Yaml::map([
                        ("name", Yaml::str(&name)),
                        ("user", Yaml::map([("exec", exec)])),
                    ]),
                    contexts: vec![],
                });
                out.len() - 1
            }
        };
        let ns = c.namespace.as_deref().filter(|ns| !ns.is_empty());
        let ctx_name = context_name(&c.destination, ns);
        let d = &mut out[i];
        if d.contexts.iter().any(|(n, _)| *n == ctx_name) {
            continue;
        }
        let mut ctx = vec![
            (Yaml::str("cluster"), Yaml::str(&name)),
            (Yaml::str("user"), Yaml::str(&name)),
        ];
        if let Some(ns) = ns {
            ctx.push((Yaml::str("namespace"), Yaml::str(ns)));
        }
        d.contexts.push((
            ctx_name.clone(),
            Yaml::map([("name", Yaml::str(&ctx_name)), ("context", Yaml::Map(ctx))]),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::merge::{Changes, merge};
    use super::super::testing::{A, CA, cl, doc, entry, names, round_trip, strings, want};
    use super::*;

    #[test]
    fn fresh_file_gets_exactly_the_entries() {
        let mut d = doc("");
        let changes = merge(
            &mut d,
            A,
            &want(
                A,
                &[cl("prod", None), cl("prod", Some("dev")), cl("stage", None)],
            ),
        );
        assert_eq!(
            changes,
            Changes {
                added: strings(&["infra:prod", "infra:prod.dev", "infra:stage"]),
                ..Changes::default()
            }
        );
        let ca = base64::engine::general_purpose::STANDARD.encode(CA);
        let expected = format!(
            r#"
apiVersion: v1
kind: Config
clusters:
- name: infra:prod
  cluster: {{server: "https://prod.connector.example:8443", certificate-authority-data: "{ca}"}}
- name: infra:stage
  cluster: {{server: "https://stage.connector.example:8443", certificate-authority-data: "{ca}"}}
contexts:
- {{name: infra:prod, context: {{cluster: infra:prod, user: infra:prod}}}}
- {{name: infra:prod.dev, context: {{cluster: infra:prod, user: infra:prod, namespace: dev}}}}
- {{name: infra:stage, context: {{cluster: infra:stage, user: infra:stage}}}}
users:
- name: infra:prod
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: /usr/local/bin/infra
      args: [tokens, create, --server, "a.example:8443", --destination, prod]
      interactiveMode: Never
      provideClusterInfo: true
- name: infra:stage
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: /usr/local/bin/infra
      args: [tokens, create, --server, "a.example:8443", --destination, stage]
      interactiveMode: Never
      provideClusterInfo: true
preferences: {{}}
"#
        );
        assert_eq!(d, doc(&expected));
        assert_eq!(round_trip(&d), d);
        assert!(d.get("current-context").is_none(), "never chosen here");
    }

    #[test]
    fn namespaces_make_separate_contexts() {
        let mut d = doc("");
        merge(
            &mut d,
            A,
            &want(
                A,
                &[
                    cl("prod", Some("web")),
                    cl("prod", Some("db")),
                    cl("prod", Some("web")),
                ],
            ),
        );
        assert_eq!(names(&d, "clusters"), strings(&["infra:prod"]));
        assert_eq!(names(&d, "users"), strings(&["infra:prod"]));
        assert_eq!(
            names(&d, "contexts"),
            strings(&["infra:prod.web", "infra:prod.db"])
        );
        let ctx = entry(&d, "contexts", "infra:prod.db");
        assert_eq!(ctx.str_at(&["context", "namespace"]), Some("db"));
        assert_eq!(ctx.str_at(&["context", "cluster"]), Some("infra:prod"));
        assert_eq!(ctx.str_at(&["context", "user"]), Some("infra:prod"));
        assert_eq!(context_name("prod", Some("db")), "infra:prod.db");
        assert_eq!(context_name("prod", None), "infra:prod");
        assert_eq!(context_name("prod", Some("")), "infra:prod");
    }

    #[test]
    fn empty_ca_has_no_ca_data() {
        let mut c = cl("prod", None);
        c.ca_pem = String::new();
        let mut d = doc("");
        merge(&mut d, A, &want(A, &[c]));
        let cluster = entry(&d, "clusters", "infra:prod").get("cluster").unwrap();
        assert!(cluster.get("certificate-authority-data").is_none());
        let mut d = doc("");
        merge(&mut d, A, &want(A, &[cl("prod", None)]));
        let data = entry(&d, "clusters", "infra:prod")
            .str_at(&["cluster", "certificate-authority-data"])
            .unwrap();
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        assert_eq!(pem, CA.as_bytes());
    }
}
