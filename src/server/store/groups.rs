//! Groups and their members.

use sqlx::AssertSqlSafe;

use super::{
    Bind, List, Page, PageRequest, Result, Store, StoreError, UserRow, conflict, new_id, now,
};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GroupRow {
    pub id: String,
    pub name: String,
    pub total_users: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

const SELECT: &str = "SELECT g.id, g.name, g.created_at, g.updated_at, \
     (SELECT COUNT(*) FROM group_members m WHERE m.group_id = g.id) AS total_users FROM groups g";

impl Store {
    pub async fn create_group(&self, name: &str) -> Result<GroupRow> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO groups (id, name, created_at, updated_at) VALUES ($1, $2, $3, $3)",
        )
        .bind(&id)
        .bind(name)
        .bind(now())
        .execute(self.pool())
        .await
        .map_err(|e| conflict(e, || format!("a group named {name:?} already exists")))?;
        self.get_group(&id).await
    }

    pub async fn get_group(&self, id: &str) -> Result<GroupRow> {
        let sql = format!("{SELECT} WHERE g.id = $1");
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound("group"))
    }

    pub async fn find_group_by_name(&self, name: &str) -> Result<Option<GroupRow>> {
        let sql = format!("{SELECT} WHERE g.name = $1");
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(self.pool())
            .await?)
    }

    /// Lists groups, optionally only those named `name` or holding `user_id`.
    pub async fn list_groups(
        &self,
        name: Option<&str>,
        user_id: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<GroupRow>> {
        let list = List {
            select: SELECT,
            count_from: "groups g",
            filter: "($1 IS NULL OR g.name = $1) AND ($2 IS NULL OR g.id IN \
                     (SELECT group_id FROM group_members WHERE user_id = $2))",
            order_by: "g.name",
        };
        self.page_of(&list, &[Bind::Text(name), Bind::Text(user_id)], page)
            .await
    }

    /// Removes the group and the grants made to it.
    pub async fn delete_group(&self, id: &str) -> Result<()> {
        let affected = self.destinations_of_group(id).await?;
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM grants WHERE subject_kind = 'group' AND subject_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM group_members WHERE group_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM groups WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("group"));
        }
        tx.commit().await?;
        self.record_change(&affected).await?;
        Ok(())
    }

    /// Adds and removes members in one transaction; adding a member twice is fine.
    pub async fn update_group_members(
        &self,
        id: &str,
        add: &[String],
        remove: &[String],
    ) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        for user in add {
            sqlx::query(
                "INSERT INTO group_members (group_id, user_id) VALUES ($1, $2) \
                 ON CONFLICT (group_id, user_id) DO NOTHING",
            )
            .bind(id)
            .bind(user)
            .execute(&mut *tx)
            .await?;
        }
        for user in remove {
            sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND user_id = $2")
                .bind(id)
                .bind(user)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("UPDATE groups SET updated_at = $1 WHERE id = $2")
            .bind(now())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        // Who may do what on the group's destinations changed: their
        // connectors follow it (live revocation needs to know).
        // A member who leaves loses the group in their cluster tokens
        // wherever they reach, not only on the group's destinations.
        if !add.is_empty() || !remove.is_empty() {
            let mut affected = self.destinations_of_group(id).await?;
            for user in remove {
                affected.extend(
                    self.destinations_of(&super::Subject::User(user.clone()))
                        .await?,
                );
            }
            self.record_change(&affected).await?;
        }
        Ok(())
    }

    pub async fn group_members(&self, id: &str) -> Result<Vec<UserRow>> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT user_id FROM group_members WHERE group_id = $1")
                .bind(id)
                .fetch_all(self.pool())
                .await?;
        let mut users = Vec::with_capacity(rows.len());
        for (uid,) in rows {
            users.push(self.get_user(&uid).await?);
        }
        users.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(users)
    }
}
