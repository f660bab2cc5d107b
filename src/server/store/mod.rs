//! The server's state, behind one seam for SQLite and PostgreSQL.
//!
//! sqlx's `Any` driver runs the same runtime queries on both backends, so
//! there is one set of migrations and one implementation to test twice.
//! Every SQL statement of the server lives in this module and its files;
//! the rest of the server calls typed [`Store`] methods and never sees a
//! query. The schema keeps to types both agree on (TEXT, BIGINT); ids are
//! made here, not by the database; times are Unix seconds. Rows are read
//! with `#[derive(sqlx::FromRow)]`; what a column cannot say directly (JSON
//! text, a count as `u64`) is decoded by the small types at the end of this
//! file. Every list pages through one helper, `Store::page_of`. Nothing a
//! replica needs lives in memory: two servers on one PostgreSQL see the
//! same data, and each wakes its own long polls on the other's changes
//! (`changes`).

mod access;
mod access_keys;
mod audit;
mod changes;
mod destinations;
mod device_codes;
mod grants;
mod groups;
mod identities;
mod provider_users;
mod providers;
mod rate_limits;
mod sessions;
mod signing_keys;
mod users;

pub use access::MembershipRow;
pub use access_keys::{AccessKeyRow, NewAccessKey};
pub use audit::{AuditEntry, AuditRow};
pub use changes::{ChangeFeed, base_destination};
pub use destinations::{DestinationRow, Registration};
pub use device_codes::{DeviceCodeRow, DeviceSigninRow, NewDeviceCode, NewDeviceSignin};
pub use grants::{Access, GrantFilter, GrantRow, Held, Subject};
pub use groups::GroupRow;
pub use identities::{IdentityRow, MachineTokenRow, NewMachineToken, OidcAuthRow};
pub use provider_users::{LinkConflict, ProviderUserRow, SignIn};
pub use providers::{NewProvider, ProviderRow};
pub use rate_limits::{RateCount, Window};
pub use sessions::{AppendRefused, NewSession, SessionRow};
pub use signing_keys::{NewSigningKey, SigningKeyRow};
pub use users::{Origin, UserRow};

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyArguments, AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Arguments, AssertSqlSafe, Executor, FromRow};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The database URL (PostgreSQL's change listener opens its own
    /// connection).
    url: std::sync::Arc<str>,
    /// Wakes this replica's long polls when what they follow changes.
    feed: std::sync::Arc<ChangeFeed>,
    /// Destinations whose connector called in since the last flush, and
    /// when: heartbeats that change nothing are written once a second, in
    /// one statement.
    seen: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, i64>>>,
}

/// One page of results and the count of all matching rows.
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
}

/// Which rows of a list to return.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub page: u64,
    pub limit: u64,
}

impl PageRequest {
    /// The rows to skip; pages too far out for the database skip them all
    /// (`extract::page` refuses them before they get here).
    pub fn offset(&self) -> i64 {
        (self.page.max(1) - 1)
            .checked_mul(self.limit)
            .and_then(|o| i64::try_from(o).ok())
            .unwrap_or(i64::MAX)
    }
    pub fn all() -> Self {
        PageRequest {
            page: 1,
            limit: i64::MAX as u64,
        }
    }
}

impl Store {
    /// Connects to `url` (`sqlite://PATH` or `postgres://…`) and migrates.
    /// `max_connections`: the pool's size (default 8 for SQLite, whose one
    /// writer makes more useless, and 16 for PostgreSQL).
    pub async fn connect(url: &str, max_connections: Option<u32>) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            anyhow::bail!(
                "unsupported database URL {:?}: use postgres://USER@HOST/DB or leave --db out for \
                 the embedded SQLite store",
                redact_url(url)
            );
        };
        let options = AnyConnectOptions::from_str(url)
            .map_err(|e| anyhow::anyhow!("bad database URL {}: {e}", redact_url(url)))?;
        let mut pool = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        pool = match backend {
            Backend::Sqlite => pool
                // SQLite allows one writer; a small pool keeps lock waits short.
                .max_connections(max_connections.unwrap_or(8).max(1))
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        Ok(())
                    })
                }),
            Backend::Postgres => pool.max_connections(max_connections.unwrap_or(16).max(1)),
        };
        let pool = pool
            .connect_with(options)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the database {}: {e}", redact_url(url)))?;
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| anyhow::anyhow!("cannot migrate the database: {e}"))?;
        Ok(Store {
            pool,
            backend,
            url: url.into(),
            feed: Default::default(),
            seen: Default::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool, for this module's queries only: outside it nobody writes SQL.
    fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn get_setting(&self, name: &str) -> Result<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.0))
    }

    /// Sets `name` only if it has no value yet; true when this call set it
    /// (of several replicas, exactly one).
    pub async fn set_setting_once(&self, name: &str, value: &str) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets `name` only if it has no value yet; returns the value now stored.
    pub async fn init_setting(&self, name: &str, value: &str) -> Result<String> {
        self.set_setting_once(name, value).await?;
        Ok(self.get_setting(name).await?.unwrap_or_default())
    }

    /// Takes the lease `name` until `until_ms` when nobody holds it (it is
    /// unset, or ran out before `now_ms`); true when taken. A compare and
    /// swap on the `settings` row, so of several replicas exactly one wins.
    pub async fn take_lease(&self, name: &str, now_ms: i64, until_ms: i64) -> Result<bool> {
        let held = self.init_setting(name, "0").await?;
        if held.parse::<i64>().is_ok_and(|t| t > now_ms) {
            return Ok(false);
        }
        let done = sqlx::query("UPDATE settings SET value = $1 WHERE name = $2 AND value = $3")
            .bind(until_ms.to_string())
            .bind(name)
            .bind(&held)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn delete_setting(&self, name: &str) -> Result<()> {
        sqlx::query("DELETE FROM settings WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_setting(&self, name: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// One page of a list, and the count of all the rows its filter
    /// matches: the `list + COUNT(*)` pair every list is made of. `binds`
    /// are `$1…` of the filter, in order, bound to both statements; the
    /// page's `LIMIT` and `OFFSET` are the next two placeholders.
    async fn page_of<R>(
        &self,
        list: &List<'_>,
        binds: &[Bind<'_>],
        page: PageRequest,
    ) -> Result<Page<R>>
    where
        R: for<'r> FromRow<'r, AnyRow> + Send + Unpin,
    {
        let n = binds.len();
        let items_sql = format!(
            "{} WHERE {} ORDER BY {} LIMIT ${} OFFSET ${}",
            list.select,
            list.filter,
            list.order_by,
            n + 1,
            n + 2
        );
        let count_sql = format!(
            "SELECT COUNT(*) FROM {} WHERE {}",
            list.count_from, list.filter
        );
        let mut args = arguments(binds)?;
        add(&mut args, page.limit.min(i64::MAX as u64) as i64)?;
        add(&mut args, page.offset())?;
        let items = sqlx::query_as_with(AssertSqlSafe(items_sql), args)
            .fetch_all(self.pool())
            .await?;
        let (count,): (i64,) = sqlx::query_as_with(AssertSqlSafe(count_sql), arguments(binds)?)
            .fetch_one(self.pool())
            .await?;
        Ok(Page {
            items,
            total: total(count),
        })
    }
}

/// A list query in parts, for [`Store::page_of`]. Every part is a constant
/// of this module, or made of placeholders only (see [`placeholders`]):
/// never text from a request.
struct List<'s> {
    /// `SELECT columns FROM table [JOIN …]`, the rows of the page.
    select: &'s str,
    /// The table (and alias) the filter reads, without the joins that only
    /// add columns: what is counted.
    count_from: &'s str,
    /// The `WHERE` condition, shared by the page and its count.
    filter: &'s str,
    order_by: &'s str,
}

/// A value bound to a list's filter. The lists filter on text and integers
/// only; `None` binds NULL (`$n IS NULL` then matches every row).
#[derive(Debug, Clone, Copy)]
enum Bind<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
}

fn arguments(binds: &[Bind<'_>]) -> Result<AnyArguments> {
    let mut args = AnyArguments::default();
    for b in binds {
        match *b {
            Bind::Text(v) => add(&mut args, v)?,
            Bind::Int(v) => add(&mut args, v)?,
        }
    }
    Ok(args)
}

fn add<'t, T>(args: &mut AnyArguments, value: T) -> Result<()>
where
    T: sqlx::Encode<'t, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    args.add(value)
        .map_err(|e| StoreError::Db(sqlx::Error::Encode(e)))
}

/// `$first, $first+1, …`: `n` placeholders for an `IN (…)` list, made of
/// numbers alone.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Hides the password in a database URL for messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("****"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// The current time in Unix seconds, by the one clock.
pub fn now() -> i64 {
    crate::clock::now()
}

/// The current time in Unix milliseconds, by the one clock.
pub fn now_ms() -> i64 {
    crate::clock::now_millis()
}

/// A new random id: 12 characters of a lowercase alphabet without look-alikes.
pub fn new_id() -> String {
    random_string(12, b"abcdefghijkmnpqrstuvwxyz23456789")
}

pub fn random_string(len: usize, alphabet: &[u8]) -> String {
    crate::web::random_from(len, alphabet)
}

/// Maps a unique-constraint violation to a 409-style conflict.
pub(crate) fn conflict(e: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what()),
        _ => StoreError::Db(e),
    }
}

/// A `COUNT(*)` as a total (never negative).
pub(crate) fn total(count: i64) -> u64 {
    count.max(0) as u64
}

/// A TEXT column holding JSON: the one place such columns are written
/// ([`JsonText::list`], [`JsonText::map`]) and read (the `From` impls, for
/// `#[sqlx(try_from = "JsonText")]`). Reading is lenient: text that is not
/// the JSON expected reads as empty, never as an error.
#[derive(sqlx::Type)]
#[sqlx(transparent)]
struct JsonText(String);

impl JsonText {
    fn list(v: &[String]) -> String {
        serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
    }
    fn map(v: &BTreeMap<String, String>) -> String {
        serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
    }
}

impl From<JsonText> for Vec<String> {
    fn from(t: JsonText) -> Self {
        serde_json::from_str(&t.0).unwrap_or_default()
    }
}

impl From<JsonText> for BTreeMap<String, String> {
    fn from(t: JsonText) -> Self {
        serde_json::from_str(&t.0).unwrap_or_default()
    }
}

/// A BIGINT count read as `u64`, never below `MIN` (for
/// `#[sqlx(try_from = "Count<MIN>")]`): the `Any` driver has no unsigned
/// types.
#[derive(sqlx::Type)]
#[sqlx(transparent)]
struct Count<const MIN: i64>(i64);

impl<const MIN: i64> From<Count<MIN>> for u64 {
    fn from(c: Count<MIN>) -> u64 {
        c.0.max(MIN) as u64
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn offsets_never_wrap() {
        let p = |page, limit| super::PageRequest { page, limit }.offset();
        assert_eq!(p(1, 100), 0);
        assert_eq!(p(3, 100), 200);
        assert_eq!(p(u64::MAX, 1000), i64::MAX);
        assert_eq!(p(u64::MAX / 2, 2), i64::MAX);
    }

    #[test]
    fn placeholders_count_from_first() {
        assert_eq!(super::placeholders(2, 3), "$2, $3, $4");
        assert_eq!(super::placeholders(1, 0), "");
    }

    #[test]
    fn json_text_reads_leniently() {
        use std::collections::BTreeMap;
        let list = |t: &str| Vec::<String>::from(super::JsonText(t.into()));
        assert_eq!(list(r#"["a","b"]"#), ["a", "b"]);
        assert!(list("not json").is_empty());
        let map = BTreeMap::<String, String>::from(super::JsonText(r#"{"k":"v"}"#.into()));
        assert_eq!(map.get("k").map(String::as_str), Some("v"));
        assert!(BTreeMap::<String, String>::from(super::JsonText("[]".into())).is_empty());
        let v = vec!["x".to_string()];
        assert_eq!(list(&super::JsonText::list(&v)), v);
    }

    #[test]
    fn counts_never_fall_below_their_minimum() {
        assert_eq!(u64::from(super::Count::<0>(-3)), 0);
        assert_eq!(u64::from(super::Count::<1>(0)), 1);
        assert_eq!(u64::from(super::Count::<1>(7)), 7);
    }

    #[test]
    fn redacts_password_in_url() {
        assert_eq!(
            super::redact_url("postgres://u:secret@h/db"),
            "postgres://u:****@h/db"
        );
        assert_eq!(super::redact_url("sqlite:///x"), "sqlite:///x");
    }
}
