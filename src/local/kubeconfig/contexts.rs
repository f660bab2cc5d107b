//! Reading the contexts of a kubeconfig and switching between them (`infra
//! list`, `infra use`): the `infra:*` contexts with the server each belongs
//! to ([`read_contexts`]), and `current-context` set under the same locks
//! as every other change ([`set_current_context`]).

use std::path::Path;

use anyhow::Context;

use super::lock::{KubectlLock, StaleLock, sibling};
use super::merge::{Owners, infra_name};
use super::yaml::{Yaml, list, parse, to_yaml};
use super::{LOCK_TIMEOUT, resolve_symlinks};
use crate::local::lock::FileLock;

/// An `infra:*` context in a kubeconfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfraContext {
    /// `infra:DEST` or `infra:DEST.NS`.
    pub name: String,
    /// The server whose entries these are (from the exec arguments of the
    /// user it references), when that can be told.
    pub server: Option<String>,
}

/// What `infra list` and `infra use` need to know of a kubeconfig.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contexts {
    /// `current-context`, when it is set.
    pub current: Option<String>,
    /// The `infra:*` contexts, in file order.
    pub infra: Vec<InfraContext>,
}

impl Contexts {
    /// The `infra:*` context of that name.
    pub fn find(&self, name: &str) -> Option<&InfraContext> {
        self.infra.iter().find(|c| c.name == name)
    }
}

/// Reads the current context and the `infra:*` contexts of the kubeconfig at
/// `path`. A missing file has none. No lock: writers replace the file
/// whole (rename), so a reader sees the old or the new one.
pub fn read_contexts(path: &Path) -> anyhow::Result<Contexts> {
    let target = resolve_symlinks(path)?;
    let Some(doc) = load(&target, "it was not read")? else {
        return Ok(Contexts::default());
    };
    let owners = Owners::of(&doc);
    let infra = list(&doc, "contexts")
        .iter()
        .filter_map(|ctx| {
            Some(InfraContext {
                name: infra_name(ctx)?.to_string(),
                server: owners.context(ctx).map(str::to_string),
            })
        })
        .collect();
    let current = doc
        .str_at(&["current-context"])
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    Ok(Contexts { current, infra })
}

/// What [`set_current_context`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switched {
    /// Whether the file changed: it is not rewritten when the context was
    /// current already.
    pub changed: bool,
    /// A lock file left by a killed writer, removed to make this change.
    pub stale_lock: Option<StaleLock>,
}

/// Sets `current-context` of the kubeconfig at `path` to `context`, which
/// must be one of its contexts; everything else stays. Takes the same locks
/// as every other change (infra's, then kubectl's).
pub fn set_current_context(path: &Path, context: &str) -> anyhow::Result<Switched> {
    let target = resolve_symlinks(path)?;
    let missing = || {
        anyhow::anyhow!(
            "the kubeconfig {} has no context {context}",
            target.display()
        )
    };
    if !target.exists() {
        return Err(missing());
    }
    let _lock = FileLock::acquire(&sibling(&target, ".infra.lock"), LOCK_TIMEOUT)?;
    let (_kubectl_lock, stale_lock) = KubectlLock::acquire(&target, LOCK_TIMEOUT)?;
    let Some(mut doc) = load(&target, "it was not changed")? else {
        return Err(missing());
    };
    if !list(&doc, "contexts")
        .iter()
        .any(|c| c.str_at(&["name"]) == Some(context))
    {
        return Err(missing());
    }
    if doc.str_at(&["current-context"]) == Some(context) {
        return Ok(Switched {
            changed: false,
            stale_lock,
        });
    }
    let Yaml::Map(pairs) = &mut doc else {
        unreachable!("parse checks that a kubeconfig is a mapping")
    };
    match pairs
        .iter_mut()
        .find(|(k, _)| k.as_str() == Some("current-context"))
    {
        Some((_, v)) => *v = Yaml::str(context),
        None => pairs.push((Yaml::str("current-context"), Yaml::str(context))),
    }
    let yaml = to_yaml(&doc)
        .with_context(|| format!("cannot write the kubeconfig {}", target.display()))?;
    crate::fsutil::write_private(&target, yaml.as_bytes())
        .with_context(|| format!("cannot write the kubeconfig {}", target.display()))?;
    Ok(Switched {
        changed: true,
        stale_lock,
    })
}

/// Reads and parses the kubeconfig at `target` (symlinks resolved); `None`
/// when it does not exist. `outcome` ends the error messages ("it was not
/// changed").
fn load(target: &Path, outcome: &str) -> anyhow::Result<Option<Yaml>> {
    let text = match std::fs::read(target) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| {
            anyhow::anyhow!(
                "the kubeconfig {} is not UTF-8 text; fix it or set KUBECONFIG to another file \
                 ({outcome})",
                target.display()
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("cannot read the kubeconfig {}", target.display())));
        }
    };
    parse(&text).map(Some).map_err(|e| {
        anyhow::anyhow!(
            "the kubeconfig {} {e}; fix it or set KUBECONFIG to another file ({outcome})",
            target.display()
        )
    })
}

#[cfg(test)]
mod context_tests {
    use super::super::{InfraCluster, write_infra_entries};
    use super::*;

    const A: &str = "a.example:8443";
    const B: &str = "b.example:8443";
    const EXE: &str = "/usr/local/bin/infra";
    const OTHER: &str = "# by hand\napiVersion: v1\nkind: Config\nclusters:\n- name: kind\n  cluster: {server: \"https://127.0.0.1:6443\"}\ncontexts:\n- name: kind\n  context: {cluster: kind, user: kind, namespace: \"0123\"}\nusers:\n- name: kind\n  user: {token: \"yes\"}\ncurrent-context: kind\n";

    fn cl(dest: &str, ns: Option<&str>) -> InfraCluster {
        InfraCluster {
            destination: dest.into(),
            namespace: ns.map(Into::into),
            url: format!("https://{dest}.example:8443"),
            ca_pem: String::new(),
        }
    }

    #[test]
    fn contexts_are_read_with_their_server() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config");
        assert_eq!(read_contexts(&path).unwrap(), Contexts::default());
        std::fs::write(&path, OTHER).unwrap();
        write_infra_entries(
            &path,
            A,
            Path::new(EXE),
            &[cl("prod", None), cl("prod", Some("web"))],
        )
        .unwrap();
        write_infra_entries(&path, B, Path::new(EXE), &[cl("dev", None)]).unwrap();
        let c = read_contexts(&path).unwrap();
        assert_eq!(c.current.as_deref(), Some("kind"));
        let got: Vec<(&str, Option<&str>)> = c
            .infra
            .iter()
            .map(|i| (i.name.as_str(), i.server.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("infra:prod", Some(A)),
                ("infra:prod.web", Some(A)),
                ("infra:dev", Some(B)),
            ]
        );
        assert_eq!(c.find("infra:dev").unwrap().server.as_deref(), Some(B));
        assert!(c.find("kind").is_none(), "only infra's contexts");
    }

    #[test]
    fn switching_sets_only_current_context() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config");
        std::fs::write(&path, OTHER).unwrap();
        write_infra_entries(&path, A, Path::new(EXE), &[cl("prod", Some("web"))]).unwrap();
        let before = parse(&std::fs::read_to_string(&path).unwrap()).unwrap();

        assert!(
            set_current_context(&path, "infra:prod.web")
                .unwrap()
                .changed
        );
        let after = parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(after.str_at(&["current-context"]), Some("infra:prod.web"));
        let strip = |d: &Yaml| {
            let Yaml::Map(pairs) = d else { panic!() };
            Yaml::Map(
                pairs
                    .iter()
                    .filter(|(k, _)| k.as_str() != Some("current-context"))
                    .cloned()
                    .collect(),
            )
        };
        assert_eq!(strip(&after), strip(&before), "nothing else changed");
        // Quoted strings stay strings (the trees above would differ too).
        assert_eq!(
            list(&after, "contexts")[0].str_at(&["context", "namespace"]),
            Some("0123")
        );

        // Already current: the file is not rewritten.
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !set_current_context(&path, "infra:prod.web")
                .unwrap()
                .changed
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes);

        // Back to a context infra did not write.
        assert!(set_current_context(&path, "kind").unwrap().changed);
        assert_eq!(
            read_contexts(&path).unwrap().current.as_deref(),
            Some("kind")
        );
        assert!(!sibling(&path, ".lock").exists(), "kubectl's lock left");
    }

    #[test]
    fn switching_to_a_missing_context_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(".kube").join("config");
        let e = set_current_context(&path, "infra:prod").unwrap_err();
        assert!(
            format!("{e:#}").contains("has no context infra:prod"),
            "{e:#}"
        );
        assert!(!tmp.path().join(".kube").exists(), "nothing is created");
        let path = tmp.path().join("config");
        std::fs::write(&path, OTHER).unwrap();
        let e = set_current_context(&path, "infra:prod").unwrap_err();
        assert!(
            format!("{e:#}").contains("has no context infra:prod"),
            "{e:#}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), OTHER);
        std::fs::write(&path, "kind: Deployment\n").unwrap();
        let e = set_current_context(&path, "kind").unwrap_err();
        assert!(format!("{e:#}").contains("was not changed"), "{e:#}");
        let e = read_contexts(&path).unwrap_err();
        assert!(format!("{e:#}").contains("is not a kubeconfig"), "{e:#}");
    }

    #[test]
    fn current_context_is_added_when_absent() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config");
        write_infra_entries(&path, A, Path::new(EXE), &[cl("prod", None)]).unwrap();
        assert_eq!(read_contexts(&path).unwrap().current, None);
        assert!(set_current_context(&path, "infra:prod").unwrap().changed);
        assert_eq!(
            read_contexts(&path).unwrap().current.as_deref(),
            Some("infra:prod")
        );
    }
}
