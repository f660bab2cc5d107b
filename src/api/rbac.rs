//! How a grant becomes a Kubernetes RBAC binding: which destination and
//! namespace it is on, and the binding's name. The connector makes the
//! bindings under these names; the server shows them (`infra access
//! explain`) without asking the cluster. One function, so the two never
//! disagree.

use sha2::{Digest, Sha256};

/// `DEST` or `DEST.NAMESPACE` as (destination, namespace).
pub fn split_destination(destination: &str) -> (&str, Option<&str>) {
    match destination.split_once('.') {
        Some((d, ns)) => (d, Some(ns)),
        None => (destination, None),
    }
}

/// The RBAC subject kind of a grant: `Group` for a group, else `User`
/// (machine identities are impersonated as users).
pub fn subject_kind(is_group: bool) -> &'static str {
    if is_group { "Group" } else { "User" }
}

/// The name of the binding the connector of `destination` makes for
/// `kind` (`User` / `Group`) `subject` holding ClusterRole `role` in
/// `namespace` (a RoleBinding) or cluster-wide (a ClusterRoleBinding).
/// Names hash the destination too, so two destinations on one cluster never
/// share one.
pub fn binding_name(
    destination: &str,
    namespace: Option<&str>,
    role: &str,
    kind: &str,
    subject: &str,
) -> String {
    let digest = Sha256::digest(
        format!(
            "{destination}\0{}\0{role}\0{kind}\0{subject}",
            namespace.unwrap_or("")
        )
        .as_bytes(),
    );
    format!("infra-{}", &hex::encode(digest)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_distinct() {
        let a = binding_name("prod", None, "view", "User", "alice");
        assert_eq!(a, binding_name("prod", None, "view", "User", "alice"));
        assert!(a.starts_with("infra-") && a.len() == 22);
        assert_ne!(a, binding_name("prod-b", None, "view", "User", "alice"));
        assert_ne!(
            a,
            binding_name("prod", Some("web"), "view", "User", "alice")
        );
        assert_ne!(a, binding_name("prod", None, "view", "Group", "alice"));
        assert_eq!(split_destination("prod.web"), ("prod", Some("web")));
        assert_eq!(split_destination("prod"), ("prod", None));
    }
}
