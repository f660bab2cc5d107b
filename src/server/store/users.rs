//! Users: people (local or from an identity provider) and the built-in
//! connector user.

use sqlx::AssertSqlSafe;

use super::{
    Bind, List, Page, PageRequest, Result, Store, StoreError, conflict, new_id, now, total,
};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: String,
    pub name: String,
    pub kind: String,
    /// How the user came to be: `builtin`, `local`, `provider` or `invited`
    /// (see [`Origin`]).
    pub origin: String,
    pub password_hash: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_seen_at: Option<i64>,
}

const SELECT: &str = "SELECT id, name, kind, origin, password_hash, created_at, updated_at, \
     last_seen_at FROM users";

/// How a user came to be, which decides whether a first sign-in through an
/// identity provider may claim it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The first admin and the connector user: never signed in through a provider.
    Builtin,
    /// Has (or had) a password: never linked to a provider account.
    Local,
    /// Made by a provider sign-in.
    Provider,
    /// Made by an admin or the config file without a password: the first
    /// sign-in whose provider vouches for the address claims it.
    Invited,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Builtin => "builtin",
            Origin::Local => "local",
            Origin::Provider => "provider",
            Origin::Invited => "invited",
        }
    }
}

impl UserRow {
    pub fn origin(&self) -> Origin {
        match self.origin.as_str() {
            "builtin" => Origin::Builtin,
            "local" => Origin::Local,
            "provider" => Origin::Provider,
            _ => Origin::Invited,
        }
    }
}

impl Store {
    pub async fn create_user(
        &self,
        name: &str,
        kind: &str,
        origin: Origin,
        password_hash: Option<&str>,
    ) -> Result<UserRow> {
        let id = new_id();
        let t = now();
        sqlx::query(
            "INSERT INTO users (id, name, kind, origin, password_hash, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(&id)
        .bind(name)
        .bind(kind)
        .bind(origin.as_str())
        .bind(password_hash)
        .bind(t)
        .execute(self.pool())
        .await
        .map_err(|e| conflict(e, || format!("a user named {name:?} already exists")))?;
        self.get_user(&id).await
    }

    pub async fn get_user(&self, id: &str) -> Result<UserRow> {
        let sql = format!("{SELECT} WHERE id = $1");
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound("user"))
    }

    pub async fn find_user_by_name(&self, name: &str) -> Result<Option<UserRow>> {
        let sql = format!("{SELECT} WHERE name = $1");
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(self.pool())
            .await?)
    }

    /// People only: the connector user is not listed.
    pub async fn list_users(&self, name: Option<&str>, page: PageRequest) -> Result<Page<UserRow>> {
        let list = List {
            select: SELECT,
            count_from: "users",
            filter: "kind = 'user' AND ($1 IS NULL OR name = $1)",
            order_by: "name",
        };
        self.page_of(&list, &[Bind::Text(name)], page).await
    }

    /// Sets the password; an invited user becomes a local one (never
    /// claimed by a provider sign-in).
    pub async fn set_user_password(&self, id: &str, password_hash: &str) -> Result<()> {
        let done = sqlx::query(
            "UPDATE users SET password_hash = $1, updated_at = $2, \
             origin = CASE WHEN origin = 'invited' THEN 'local' ELSE origin END WHERE id = $3",
        )
        .bind(password_hash)
        .bind(now())
        .bind(id)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("user"));
        }
        Ok(())
    }

    pub async fn touch_user(&self, id: &str) -> Result<()> {
        sqlx::query("UPDATE users SET last_seen_at = $1 WHERE id = $2")
            .bind(now())
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Removes the user with their grants, memberships and access keys.
    pub async fn delete_user(&self, id: &str) -> Result<()> {
        let affected = self
            .destinations_of(&super::Subject::User(id.to_string()))
            .await?;
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM grants WHERE subject_kind = 'user' AND subject_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM access_keys WHERE owner_kind = 'user' AND owner_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM group_members WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("user"));
        }
        tx.commit().await?;
        self.record_change(&affected).await?;
        Ok(())
    }

    pub async fn count_users(&self) -> Result<u64> {
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
            .fetch_one(self.pool())
            .await?;
        Ok(total(count))
    }
}
