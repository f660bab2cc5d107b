//! The merge and ownership rules: which server each `infra:*` entry belongs
//! to ([`Owners`], from its user's exec arguments), and how one server's
//! entries are made exactly what it wants ([`merge`]): its stale entries
//! go, unowned `infra:*` entries with a wanted name are taken over, and
//! every other entry (another server's, or one infra did not write) stays
//! where it is.

use std::collections::{HashMap, HashSet};

use super::entries::Destination;
use super::yaml::{LISTS, Yaml, list};
use super::{PREFIX, Skipped};

/// What [`merge`] did, by context name.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Changes {
    pub(super) added: Vec<String>,
    pub(super) updated: Vec<String>,
    pub(super) removed: Vec<String>,
    pub(super) skipped: Vec<Skipped>,
}

/// The name of an entry infra writes (`infra:...`), else None.
pub(super) fn infra_name(entry: &Yaml) -> Option<&str> {
    entry.str_at(&["name"]).filter(|n| n.starts_with(PREFIX))
}

/// The server in exec arguments: `--server S` or `--server=S`.
fn server_in_args(user: &Yaml) -> Option<&str> {
    let Some(Yaml::Seq(args)) = user.get("user").and_then(|u| u.get("exec")?.get("args")) else {
        return None;
    };
    let args: Vec<&str> = args.iter().filter_map(Yaml::as_str).collect();
    args.iter().enumerate().find_map(|(i, a)| {
        if *a == "--server" {
            args.get(i + 1).copied()
        } else {
            a.strip_prefix("--server=")
        }
    })
}

/// Which server each `infra:*` entry of the document belongs to.
pub(super) struct Owners<'a> {
    /// By user name, from the exec arguments.
    users: HashMap<&'a str, &'a str>,
    /// By cluster name: through a same-named user, else through a context
    /// that references both it and an owned user.
    clusters: HashMap<&'a str, &'a str>,
}

impl<'a> Owners<'a> {
    pub(super) fn of(doc: &'a Yaml) -> Owners<'a> {
        let mut users = HashMap::new();
        for u in list(doc, "users") {
            if let (Some(name), Some(server)) = (infra_name(u), server_in_args(u)) {
                users.entry(name).or_insert(server);
            }
        }
        let mut clusters = HashMap::new();
        for c in list(doc, "clusters") {
            if let Some(name) = infra_name(c)
                && let Some(server) = users.get(name)
            {
                clusters.entry(name).or_insert(*server);
            }
        }
        for ctx in list(doc, "contexts") {
            if infra_name(ctx).is_some()
                && let Some(cluster) = ctx.str_at(&["context", "cluster"])
                && let Some(user) = ctx.str_at(&["context", "user"])
                && let Some(server) = users.get(user)
            {
                clusters.entry(cluster).or_insert(*server);
            }
        }
        Owners { users, clusters }
    }

    fn user(&self, entry: &Yaml) -> Option<&'a str> {
        self.users.get(infra_name(entry)?).copied()
    }

    fn cluster(&self, entry: &Yaml) -> Option<&'a str> {
        self.clusters.get(infra_name(entry)?).copied()
    }

    /// Through the user it references, its cluster, or the user named like
    /// its destination (`infra:DEST` for `infra:DEST.NS`; destination names
    /// have no dots).
    pub(super) fn context(&self, entry: &Yaml) -> Option<&'a str> {
        let name = infra_name(entry)?;
        let dest = name.split_once('.').map_or(name, |(d, _)| d);
        entry
            .str_at(&["context", "user"])
            .and_then(|u| self.users.get(u))
            .or_else(|| {
                entry
                    .str_at(&["context", "cluster"])
                    .and_then(|c| self.clusters.get(c))
            })
            .or_else(|| self.users.get(dest))
            .copied()
    }
}

/// What [`reconcile`] did to one list, by entry name.
#[derive(Default)]
struct ListChanges {
    added: HashSet<String>,
    changed: HashSet<String>,
    removed: Vec<String>,
}

/// Makes one list hold `wanted` in place of the entries owned by `server`
/// (and unowned `infra:*` entries with a wanted name); `owners[i]` is the
/// owner of `items[i]`. Everything else stays where it is; new entries go
/// to the end.
fn reconcile(
    items: Vec<Yaml>,
    owners: &[Option<String>],
    server: &str,
    wanted: &[(String, Yaml)],
) -> (Vec<Yaml>, ListChanges) {
    let mut changes = ListChanges::default();
    let mut placed: HashSet<&str> = HashSet::new();
    let mut out = Vec::with_capacity(items.len() + wanted.len());
    for (item, owner) in items.into_iter().zip(owners) {
        let Some(name) = infra_name(&item).map(str::to_string) else {
            out.push(item);
            continue;
        };
        let want = wanted.iter().find(|(n, _)| *n == name);
        let ours = owner.as_deref() == Some(server);
        match want {
            Some((n, entry)) if ours || owner.is_none() => {
                if placed.insert(n) {
                    if item != *entry {
                        changes.changed.insert(name);
                    }
                    out.push(entry.clone());
                } else {
                    // A duplicate: the first one stands for it.
                    changes.changed.insert(name);
                }
            }
            None if ours => changes.removed.push(name),
            _ => out.push(item),
        }
    }
    for (name, entry) in wanted {
        if !placed.contains(name.as_str()) {
            changes.added.insert(name.clone());
            out.push(entry.clone());
        }
    }
    (out, changes)
}

/// Makes `server`'s `infra:*` entries in `doc` (a mapping, checked by
/// [`parse`]) exactly `wanted`, leaving every other entry alone. A wanted
/// destination whose names are taken by another server's entries is
/// skipped whole.
///
/// [`parse`]: super::yaml::parse
pub(super) fn merge(doc: &mut Yaml, server: &str, wanted: &[Destination]) -> Changes {
    let mut result = Changes::default();

    // Owners, from the document as it was.
    let (owner_lists, conflicts) = {
        let owners = Owners::of(doc);
        let owner_of = |key: &str, item: &Yaml| match key {
            "users" => owners.user(item),
            "clusters" => owners.cluster(item),
            _ => owners.context(item),
        };
        let owner_lists: Vec<Vec<Option<String>>> = LISTS
            .iter()
            .map(|key| {
                list(doc, key)
                    .iter()
                    .map(|item| owner_of(key, item).map(str::to_string))
                    .collect()
            })
            .collect();
        // Names taken by other servers, by list.
        let mut taken: HashMap<(&str, &str), &str> = HashMap::new();
        for key in LISTS {
            for item in list(doc, key) {
                if let (Some(name), Some(owner)) = (infra_name(item), owner_of(key, item))
                    && owner != server
                {
                    taken.entry((key, name)).or_insert(owner);
                }
            }
        }
        let conflicts: HashMap<String, String> = wanted
            .iter()
            .filter_map(|d| {
                let names = [("clusters", &d.name), ("users", &d.name)]
                    .into_iter()
                    .chain(d.contexts.iter().map(|(n, _)| ("contexts", n)));
                names
                    .into_iter()
                    .find_map(|(key, name)| taken.get(&(key, name.as_str())))
                    .map(|owner| (d.name.clone(), owner.to_string()))
            })
            .collect();
        (owner_lists, conflicts)
    };

    let mut wanted_lists: [Vec<(String, Yaml)>; 3] = Default::default();
    for d in wanted {
        if let Some(owner) = conflicts.get(&d.name) {
            result
                .skipped
                .extend(d.contexts.iter().map(|(name, _)| Skipped {
                    context: name.clone(),
                    owner: owner.clone(),
                }));
            continue;
        }
        wanted_lists[0].push((d.name.clone(), d.cluster.clone()));
        wanted_lists[1].push((d.name.clone(), d.user.clone()));
        wanted_lists[2].extend(d.contexts.iter().cloned());
    }

    let Yaml::Map(pairs) = doc else {
        unreachable!("parse checks that a kubeconfig is a mapping")
    };
    let mut list_changes: Vec<ListChanges> = Vec::new();
    for ((key, owners), wanted) in LISTS.iter().zip(&owner_lists).zip(&wanted_lists) {
        let slot = pairs.iter().position(|(k, _)| k.as_str() == Some(key));
        let (items, null) = match slot.map(|i| std::mem::replace(&mut pairs[i].1, Yaml::Null)) {
            Some(Yaml::Seq(items)) => (items, false),
            Some(_) => (vec![], true),
            None => (vec![], false),
        };
        let (items, changes) = reconcile(items, owners, server, wanted);
        match slot {
            // A null or absent list stays so when there is nothing in it.
            Some(_) | None if items.is_empty() && (null || slot.is_none()) => {}
            Some(i) => pairs[i].1 = Yaml::Seq(items),
            None => pairs.push((Yaml::str(key), Yaml::Seq(items))),
        }
        list_changes.push(changes);
    }
    let [clusters, users, contexts]: [ListChanges; 3] =
        list_changes.try_into().unwrap_or_else(|_| unreachable!());

    for (name, _) in &wanted_lists[2] {
        if contexts.added.contains(name) {
            result.added.push(name.clone());
            continue;
        }
        let dest = name.split_once('.').map_or(name.as_str(), |(d, _)| d);
        let touched = |c: &ListChanges| c.added.contains(dest) || c.changed.contains(dest);
        if contexts.changed.contains(name) || touched(&clusters) || touched(&users) {
            result.updated.push(name.clone());
        }
    }
    result.removed = contexts.removed;

    // A current-context that no longer exists is unset; any other is kept.
    if let Some(i) = pairs
        .iter()
        .position(|(k, _)| k.as_str() == Some("current-context"))
        && let Some(current) = pairs[i].1.as_str()
        && result.removed.iter().any(|r| r == current)
    {
        pairs.remove(i);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::super::testing::{
        A, B, EXE, FOREIGN, cl, doc, entry, names, round_trip, strings, want, without_infra,
    };
    use super::super::yaml::to_yaml;
    use super::*;

    #[test]
    fn foreign_entries_keep_their_meaning() {
        let original = doc(FOREIGN);
        let mut d = original.clone();
        merge(&mut d, A, &want(A, &[cl("prod", None)]));
        let written = to_yaml(&d).unwrap();
        let reread = doc(&written);
        assert_eq!(
            without_infra(&reread),
            without_infra(&original),
            "{written}"
        );
        // Order of the foreign entries kept; infra's appended.
        assert_eq!(
            names(&reread, "clusters"),
            strings(&["kind-kind", "infra:orphan", "infra:prod"])
        );
        // Spot checks of the types, as another reader sees them.
        let ext = entry(&reread, "clusters", "kind-kind")
            .get("cluster")
            .and_then(|c| c.get("extensions"))
            .and_then(|e| match e {
                Yaml::Seq(items) => items[0].get("extension"),
                _ => None,
            })
            .unwrap()
            .clone();
        for (key, want) in [
            ("quoted-yes", Yaml::str("yes")),
            ("quoted-no", Yaml::str("no")),
            ("quoted-on", Yaml::str("on")),
            ("quoted-octal", Yaml::str("0123")),
            ("quoted-version", Yaml::str("1.10")),
            ("quoted-null", Yaml::str("null")),
            ("quoted-tilde", Yaml::str("~")),
            ("quoted-empty", Yaml::str("")),
            ("quoted-date", Yaml::str("2001-12-14")),
            ("quoted-exp", Yaml::str("1e3")),
            ("plain-yes", Yaml::Bool(true)),
            ("plain-octal", Yaml::Int(0o123)),
            ("plain-version", Yaml::Float(1.1)),
            ("plain-null", Yaml::Null),
            ("plain-int", Yaml::Int(42)),
            ("big", Yaml::Int(u64::MAX.into())),
            ("multi", Yaml::str("line one\nline two\n")),
        ] {
            assert_eq!(ext.get(key), Some(&want), "{key} in\n{written}");
        }
        let Yaml::Map(pairs) = &ext else { panic!() };
        assert!(pairs.contains(&(Yaml::Int(1), Yaml::str("int key"))));
        assert_eq!(
            reread.str_at(&["current-context"]),
            Some("kind-kind"),
            "{written}"
        );
    }

    #[test]
    fn unwanted_unowned_infra_entries_are_left_alone() {
        let mut d = doc(FOREIGN);
        merge(&mut d, A, &want(A, &[cl("prod", None)]));
        assert_eq!(
            names(&d, "clusters"),
            strings(&["kind-kind", "infra:orphan", "infra:prod"])
        );
    }

    #[test]
    fn unowned_infra_entries_with_a_wanted_name_are_taken_over() {
        let mut d = doc(FOREIGN);
        let changes = merge(&mut d, A, &want(A, &[cl("orphan", None)]));
        assert_eq!(changes.added, strings(&["infra:orphan"]));
        assert_eq!(
            names(&d, "clusters"),
            strings(&["kind-kind", "infra:orphan"])
        );
        assert_eq!(
            entry(&d, "clusters", "infra:orphan").str_at(&["cluster", "server"]),
            Some("https://orphan.connector.example:8443")
        );
    }

    #[test]
    fn rerunning_is_idempotent() {
        let mut d = doc(FOREIGN);
        let wanted = want(
            A,
            &[cl("prod", None), cl("prod", Some("ns1")), cl("x", None)],
        );
        merge(&mut d, A, &wanted);
        let d = round_trip(&d);
        let mut again = d.clone();
        let changes = merge(&mut again, A, &wanted);
        assert_eq!(changes, Changes::default());
        assert_eq!(again, d);
    }

    #[test]
    fn stale_entries_of_this_server_go_and_other_servers_stay() {
        let mut d = doc(FOREIGN);
        merge(
            &mut d,
            A,
            &want(
                A,
                &[
                    cl("prod", None),
                    cl("stage", None),
                    cl("stage", Some("web")),
                ],
            ),
        );
        merge(
            &mut d,
            B,
            &want(B, &[cl("dev", None), cl("dev", Some("web"))]),
        );
        let b_entries: Vec<Yaml> = LISTS
            .iter()
            .flat_map(|k| {
                list(&d, k)
                    .iter()
                    .filter(|e| infra_name(e).is_some_and(|n| n.starts_with("infra:dev")))
            })
            .cloned()
            .collect();
        assert_eq!(b_entries.len(), 4);

        // A's prod moves to another URL and A loses stage.
        let mut moved = cl("prod", None);
        moved.url = "https://elsewhere.example".into();
        let changes = merge(&mut d, A, &want(A, &[moved]));
        assert_eq!(changes.added, Vec::<String>::new());
        assert_eq!(changes.updated, strings(&["infra:prod"]));
        assert_eq!(
            changes.removed,
            strings(&["infra:stage", "infra:stage.web"])
        );
        assert_eq!(
            names(&d, "contexts"),
            strings(&["kind-kind", "infra:prod", "infra:dev", "infra:dev.web"])
        );
        assert_eq!(
            names(&d, "clusters"),
            strings(&["kind-kind", "infra:orphan", "infra:prod", "infra:dev"])
        );
        assert_eq!(
            names(&d, "users"),
            strings(&["kind-kind", "infra:prod", "infra:dev"])
        );
        for e in &b_entries {
            let key = LISTS
                .iter()
                .find(|k| list(&d, k).contains(e))
                .unwrap_or_else(|| panic!("B's entry changed: {e:?}"));
            assert!(!key.is_empty());
        }
        assert_eq!(without_infra(&d), without_infra(&doc(FOREIGN)));

        // Logout from A: only B's entries are left.
        let changes = merge(&mut d, A, &[]);
        assert_eq!(changes.removed, strings(&["infra:prod"]));
        assert_eq!(
            names(&d, "contexts"),
            strings(&["kind-kind", "infra:dev", "infra:dev.web"])
        );
    }

    #[test]
    fn entries_are_owned_through_the_user_they_reference() {
        // Hand-renamed context and cluster, still pointing at A's user.
        let mut d = doc(&format!(
            r#"
clusters:
- {{name: "infra:renamed-cluster", cluster: {{server: "https://x"}}}}
contexts:
- {{name: "infra:renamed", context: {{cluster: "infra:renamed-cluster", user: "infra:prod"}}}}
users:
- {{name: "infra:prod", user: {{exec: {{command: {EXE}, args: [tokens, create, "--server={A}", --destination, prod]}}}}}}
"#
        ));
        let changes = merge(&mut d, A, &[]);
        assert_eq!(changes.removed, strings(&["infra:renamed"]));
        for key in LISTS {
            assert!(list(&d, key).is_empty(), "{key}: {d:?}");
        }
    }

    #[test]
    fn current_context_is_unset_only_when_its_context_is_removed() {
        let mut base = doc(FOREIGN);
        merge(
            &mut base,
            A,
            &want(A, &[cl("prod", None), cl("stage", None)]),
        );
        merge(&mut base, B, &want(B, &[cl("dev", None)]));
        let with_current = |ctx: &str| {
            let mut d = base.clone();
            let Yaml::Map(pairs) = &mut d else { panic!() };
            for (k, v) in pairs.iter_mut() {
                if k.as_str() == Some("current-context") {
                    *v = Yaml::str(ctx);
                }
            }
            d
        };
        let mut moved = cl("prod", None);
        moved.url = "https://elsewhere.example".into();
        let wanted = want(A, &[moved]);

        let mut d = with_current("infra:stage");
        merge(&mut d, A, &wanted);
        assert_eq!(d.get("current-context"), None, "removed context");
        for kept in ["infra:prod", "infra:dev", "kind-kind", "no-such-context"] {
            let mut d = with_current(kept);
            merge(&mut d, A, &wanted);
            assert_eq!(d.str_at(&["current-context"]), Some(kept));
        }
    }

    #[test]
    fn names_of_another_server_are_skipped() {
        let mut d = doc("");
        merge(&mut d, B, &want(B, &[cl("prod", None)]));
        let before_b = d.clone();
        let changes = merge(
            &mut d,
            A,
            &want(
                A,
                &[cl("prod", None), cl("prod", Some("x")), cl("stage", None)],
            ),
        );
        assert_eq!(changes.added, strings(&["infra:stage"]));
        assert_eq!(
            changes.skipped,
            ["infra:prod", "infra:prod.x"]
                .map(|c| Skipped {
                    context: c.into(),
                    owner: B.into()
                })
                .to_vec()
        );
        assert_eq!(
            entry(&d, "users", "infra:prod"),
            entry(&before_b, "users", "infra:prod")
        );
        assert_eq!(
            names(&d, "contexts"),
            strings(&["infra:prod", "infra:stage"])
        );
    }

    #[test]
    fn null_lists_stay_null_when_nothing_is_added() {
        let mut d = doc("clusters:\ncontexts: ~\n");
        let before = d.clone();
        assert_eq!(merge(&mut d, A, &[]), Changes::default());
        assert_eq!(d, before);
        merge(&mut d, A, &want(A, &[cl("prod", None)]));
        assert_eq!(names(&d, "clusters"), strings(&["infra:prod"]));
        assert_eq!(names(&d, "users"), strings(&["infra:prod"]));
    }
}
