//! Access explained: where a user's group memberships came from, and the
//! grants that apply on one destination (directly or through groups), for
//! `GET /api/access/explain`.

use sqlx::AssertSqlSafe;

use super::grants::SELECT as GRANT_SELECT;
use super::{GrantRow, Result, Store, Subject};

/// One group a user is in, and who put them there.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MembershipRow {
    pub group_id: String,
    pub group_name: String,
    /// NULL: added by an admin; else the provider whose groups claim
    /// asserted it.
    pub provider_id: Option<String>,
    /// The provider's name (NULL also when the provider is gone).
    pub provider_name: Option<String>,
}

impl Store {
    /// The groups `user_id` is in, by name, with where each membership came from.
    pub async fn memberships(&self, user_id: &str) -> Result<Vec<MembershipRow>> {
        Ok(sqlx::query_as(
            "SELECT g.id AS group_id, g.name AS group_name, m.provider_id, \
             p.name AS provider_name \
             FROM group_members m JOIN groups g ON g.id = m.group_id \
             LEFT JOIN providers p ON p.id = m.provider_id \
             WHERE m.user_id = $1 ORDER BY g.name",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?)
    }

    /// The grants the subject holds (a user: also through groups) that
    /// apply on `destination`: on `DEST` itself and, for `DEST`, on every
    /// `DEST.NS`; for `DEST.NS`, on that namespace only.
    pub async fn grants_applying(
        &self,
        subject: &Subject,
        destination: &str,
    ) -> Result<Vec<GrantRow>> {
        let (base, ns) = crate::api::rbac::split_destination(destination);
        // Destination names are validated to `[a-z0-9-]`, so LIKE needs no
        // escaping; LIKE '' matches no destination.
        let like = if ns.is_none() {
            format!("{base}.%")
        } else {
            String::new()
        };
        let sql = format!(
            "{GRANT_SELECT} WHERE ((gr.subject_kind = $1 AND gr.subject_id = $2) OR \
             ($1 = 'user' AND gr.subject_kind = 'group' AND gr.subject_id IN \
              (SELECT group_id FROM group_members WHERE user_id = $2))) \
             AND (gr.destination = $3 OR gr.destination = $4 OR gr.destination LIKE $5) \
             ORDER BY gr.destination, gr.role, subject_name"
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(subject.kind())
            .bind(subject.id())
            .bind(base)
            .bind(destination)
            .bind(like)
            .fetch_all(self.pool())
            .await?)
    }
}
