//! Grants: a subject (user, group or machine identity) holds a role on a
//! destination (`DEST` or `DEST.NAMESPACE`).

use sqlx::AssertSqlSafe;

use super::{Bind, List, Page, PageRequest, Result, Store, StoreError, conflict, new_id, now};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    User(String),
    Group(String),
    Identity(String),
}

impl Subject {
    pub fn kind(&self) -> &'static str {
        match self {
            Subject::User(_) => "user",
            Subject::Group(_) => "group",
            Subject::Identity(_) => "identity",
        }
    }
    pub fn id(&self) -> &str {
        match self {
            Subject::User(id) | Subject::Group(id) | Subject::Identity(id) => id,
        }
    }
}

/// The two columns a [`Subject`] is stored in.
#[derive(sqlx::FromRow)]
struct SubjectColumns {
    subject_kind: String,
    subject_id: String,
}

impl From<SubjectColumns> for Subject {
    fn from(c: SubjectColumns) -> Subject {
        match c.subject_kind.as_str() {
            "group" => Subject::Group(c.subject_id),
            "identity" => Subject::Identity(c.subject_id),
            _ => Subject::User(c.subject_id),
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GrantRow {
    pub id: String,
    #[sqlx(flatten, try_from = "SubjectColumns")]
    pub subject: Subject,
    /// The subject's name at read time.
    pub subject_name: String,
    pub destination: String,
    pub role: String,
    pub created_at: i64,
    pub created_by: String,
    /// As the destination's connector last said: '', `applied` or `pending`.
    pub state: String,
    pub state_message: String,
    /// The person must have signed in at the provider within this many
    /// seconds for a cluster token under this grant; `None`: no bound.
    pub max_auth_age_secs: Option<i64>,
    /// Exec and attach sessions under this grant are recorded.
    #[sqlx(try_from = "i64")]
    pub record_sessions: Flag,
}

/// A 0/1 column as a bool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flag(pub bool);

impl From<i64> for Flag {
    fn from(v: i64) -> Flag {
        Flag(v != 0)
    }
}

#[derive(Debug, Clone, Default)]
pub struct GrantFilter {
    pub user: Option<String>,
    pub group: Option<String>,
    pub identity: Option<String>,
    /// With `user`: also the grants of the user's groups.
    pub inherited: bool,
    /// Matches `DEST` exactly, and with `include_namespaces` also `DEST.*`.
    pub destination: Option<String>,
    pub include_namespaces: bool,
    pub role: Option<String>,
}

pub(super) const SELECT: &str = "SELECT gr.id, gr.subject_kind, gr.subject_id, gr.destination, gr.role, \
     gr.created_at, gr.created_by, gr.state, gr.state_message, gr.max_auth_age_secs, gr.record_sessions, \
     COALESCE(u.name, g.name, i.name, '') AS subject_name \
     FROM grants gr \
     LEFT JOIN users u ON gr.subject_kind = 'user' AND u.id = gr.subject_id \
     LEFT JOIN groups g ON gr.subject_kind = 'group' AND g.id = gr.subject_id \
     LEFT JOIN identities i ON gr.subject_kind = 'identity' AND i.id = gr.subject_id";

/// A role held on a destination: what [`Store::access_of`] reads of a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub destination: String,
    pub role: String,
    /// The grant's `maxAuthAge`, in seconds.
    pub max_auth_age_secs: Option<i64>,
}

/// What a subject may do and who they are to a cluster, as
/// [`Store::access_of`] reads it in one query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Every role held, directly or through groups, by destination and role.
    pub grants: Vec<Held>,
    /// A user's groups' names, in order; none for other subjects.
    pub groups: Vec<String>,
}

/// A row of [`ACCESS`]: a grant (`grant`, destination, role) or a group
/// (`group`, name, '').
#[derive(sqlx::FromRow)]
struct AccessRow {
    kind: String,
    a: String,
    b: String,
    c: Option<i64>,
}

/// The grants a subject holds directly, those of a user's groups, and the
/// names of those groups; binds $1 = kind, $2 = id. Each branch is an index
/// lookup (grants' UNIQUE (subject_kind, subject_id, …), group_members_user,
/// the groups' primary key).
const ACCESS: &str = "SELECT 'grant' AS kind, gr.destination AS a, gr.role AS b, gr.max_auth_age_secs AS c FROM grants gr      WHERE gr.subject_kind = $1 AND gr.subject_id = $2      UNION ALL      SELECT 'grant', gr.destination, gr.role, gr.max_auth_age_secs FROM group_members m      JOIN grants gr ON gr.subject_kind = 'group' AND gr.subject_id = m.group_id      WHERE $1 = 'user' AND m.user_id = $2      UNION ALL      SELECT 'group', g.name, '', CAST(NULL AS BIGINT) FROM group_members m JOIN groups g ON g.id = m.group_id      WHERE $1 = 'user' AND m.user_id = $2      ORDER BY kind, a, b";

/// The WHERE clause of the list; binds $1..$8.
const FILTER: &str = "(($1 IS NULL OR (gr.subject_kind = 'user' AND gr.subject_id = $1)) \
     OR ($2 = 1 AND gr.subject_kind = 'group' AND gr.subject_id IN \
         (SELECT group_id FROM group_members WHERE user_id = $1))) \
     AND ($3 IS NULL OR (gr.subject_kind = 'group' AND gr.subject_id = $3)) \
     AND ($4 IS NULL OR (gr.subject_kind = 'identity' AND gr.subject_id = $4)) \
     AND ($5 IS NULL OR gr.destination = $5 OR ($6 = 1 AND gr.destination LIKE $7)) \
     AND ($8 IS NULL OR gr.role = $8)";

impl Store {
    /// Records where a grant stands on its cluster, as the connector of
    /// `destination` says; grants on other destinations are left alone.
    /// Does not move the change counter: connectors' long polls stay asleep.
    pub async fn set_grant_state(
        &self,
        destination: &str,
        grant_id: &str,
        state: &str,
        message: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE grants SET state = $1, state_message = $2, state_at = $3 \
             WHERE id = $4 AND (destination = $5 OR destination LIKE $6)",
        )
        .bind(state)
        .bind(message)
        .bind(now())
        .bind(grant_id)
        .bind(destination)
        .bind(format!("{destination}.%"))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The grants' change counter, shared by replicas.
    pub async fn grants_version(&self) -> Result<i64> {
        Ok(self
            .get_setting("grants_version")
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    pub async fn create_grant(
        &self,
        subject: &Subject,
        destination: &str,
        role: &str,
        max_auth_age_secs: Option<i64>,
        record_sessions: bool,
        created_by: &str,
    ) -> Result<GrantRow> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO grants (id, subject_kind, subject_id, destination, role, created_at, \
             created_by, max_auth_age_secs, record_sessions) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&id)
        .bind(subject.kind())
        .bind(subject.id())
        .bind(destination)
        .bind(role)
        .bind(now())
        .bind(created_by)
        .bind(max_auth_age_secs)
        .bind(i64::from(record_sessions))
        .execute(self.pool())
        .await
        .map_err(|e| {
            conflict(e, || {
                format!(
                    "this {} already has role {role:?} on {destination:?}",
                    subject.kind()
                )
            })
        })?;
        self.record_change(&[destination.to_string()]).await?;
        self.get_grant(&id).await
    }

    pub async fn get_grant(&self, id: &str) -> Result<GrantRow> {
        let sql = format!("{SELECT} WHERE gr.id = $1");
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound("grant"))
    }

    pub async fn list_grants(&self, f: &GrantFilter, page: PageRequest) -> Result<Page<GrantRow>> {
        // Destination names are validated to `[a-z0-9-]`, so LIKE needs no escaping.
        let like = f.destination.as_ref().map(|d| format!("{d}.%"));
        let list = List {
            select: SELECT,
            count_from: "grants gr",
            filter: FILTER,
            order_by: "gr.destination, gr.role, subject_name",
        };
        let binds = [
            Bind::Text(f.user.as_deref()),
            Bind::Int(Some(i64::from(f.inherited))),
            Bind::Text(f.group.as_deref()),
            Bind::Text(f.identity.as_deref()),
            Bind::Text(f.destination.as_deref()),
            Bind::Int(Some(i64::from(f.include_namespaces))),
            Bind::Text(like.as_deref()),
            Bind::Text(f.role.as_deref()),
        ];
        self.page_of(&list, &binds, page).await
    }

    pub async fn delete_grant(&self, id: &str) -> Result<GrantRow> {
        let grant = self.get_grant(id).await?;
        sqlx::query("DELETE FROM grants WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        self.record_change(std::slice::from_ref(&grant.destination))
            .await?;
        Ok(grant)
    }

    /// Whether the subject holds `role` on `destination`, directly or (for
    /// a user) through one of their groups.
    pub async fn has_grant(
        &self,
        subject: &Subject,
        destination: &str,
        role: &str,
    ) -> Result<bool> {
        let (count,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM grants gr WHERE gr.destination = $1 AND gr.role = $2 AND \
             ((gr.subject_kind = $3 AND gr.subject_id = $4) OR \
              ($3 = 'user' AND gr.subject_kind = 'group' AND gr.subject_id IN \
               (SELECT group_id FROM group_members WHERE user_id = $4)))",
        )
        .bind(destination)
        .bind(role)
        .bind(subject.kind())
        .bind(subject.id())
        .fetch_one(self.pool())
        .await?;
        Ok(count > 0)
    }

    /// The roles the subject holds (directly or through groups) and, for a
    /// user, their groups' names: what a cluster token is made of, in one
    /// query where [`Store::grants_of`] and [`Store::list_groups`] make
    /// three.
    pub async fn access_of(&self, subject: &Subject) -> Result<Access> {
        let rows: Vec<AccessRow> = sqlx::query_as(ACCESS)
            .bind(subject.kind())
            .bind(subject.id())
            .fetch_all(self.pool())
            .await?;
        let mut access = Access::default();
        for r in rows {
            if r.kind == "group" {
                access.groups.push(r.a);
            } else {
                access.grants.push(Held {
                    destination: r.a,
                    role: r.b,
                    max_auth_age_secs: r.c,
                });
            }
        }
        Ok(access)
    }

    /// Every grant the subject holds, directly or through groups.
    pub async fn grants_of(&self, subject: &Subject) -> Result<Vec<GrantRow>> {
        let sql = format!(
            "{SELECT} WHERE (gr.subject_kind = $1 AND gr.subject_id = $2) OR \
             ($1 = 'user' AND gr.subject_kind = 'group' AND gr.subject_id IN \
              (SELECT group_id FROM group_members WHERE user_id = $2)) \
             ORDER BY gr.destination, gr.role"
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(subject.kind())
            .bind(subject.id())
            .fetch_all(self.pool())
            .await?)
    }
}
