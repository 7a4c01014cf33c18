//! Users in PostgreSQL through a deadpool connection pool, with the schema
//! managed by versioned migrations in `migrations/`.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::{Row, error::SqlState};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::UserStore;
use crate::config::DatabaseSettings;
use crate::domain::{Login, NewUser, Taken, User, UserId, UserQuery};
use crate::storage::StoreError;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Key of the session-level advisory lock that serializes migrations.
const MIGRATION_LOCK: i64 = 0x746f_6c6c_6761_7465; // "tollgate"

/// Applies every migration not yet applied, returning how many it applied.
/// Safe on every start and from several processes at once: an advisory lock
/// lets one migrate while the others wait, and then find nothing to do.
pub async fn migrate(settings: &DatabaseSettings) -> anyhow::Result<usize> {
    let config = connection_config(settings);
    let tls = MakeRustlsConnect::new(settings.tls()?);
    let (mut client, connection) =
        tokio::time::timeout(settings.timeout(), config.connect(tls)).await??;
    let driver = tokio::spawn(connection);
    let work = async {
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let report = embedded::migrations::runner().run_async(&mut client).await;
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await?;
        anyhow::Ok(report?.applied_migrations().len())
    };
    // Waiting for another process's migration counts against the bound too;
    // migrations here are small, so the operation timeout is ample.
    let applied = tokio::time::timeout(settings.timeout() * 4, work).await??;
    drop(client);
    driver.await??;
    Ok(applied)
}

fn connection_config(settings: &DatabaseSettings) -> tokio_postgres::Config {
    let (mut config, _) = settings.url.connection();
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(settings.timeout());
    }
    config.application_name("tollgate");
    config
}

pub struct PostgresUserStore {
    pool: Pool,
    /// Bound on any one operation, waiting for a connection included.
    timeout: Duration,
}

impl PostgresUserStore {
    /// Builds the pool. Connections are opened on first use, so this
    /// succeeds even while the database is down.
    pub fn new(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        let manager = Manager::from_config(
            connection_config(settings),
            MakeRustlsConnect::new(settings.tls()?),
            // Fast: a connection the server closed is noticed and replaced
            // when it is next taken, without a round trip per checkout.
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .wait_timeout(Some(settings.timeout()))
            .create_timeout(Some(settings.timeout()))
            .recycle_timeout(Some(settings.timeout()))
            .runtime(Runtime::Tokio1)
            .build()?;
        Ok(Self {
            pool,
            timeout: settings.timeout(),
        })
    }

    /// Runs `op` on a pooled connection within the operation timeout.
    async fn with_client<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&deadpool_postgres::Client) -> Result<T, tokio_postgres::Error>,
    {
        let work = async {
            let client = self.pool.get().await.map_err(pool_error)?;
            op(&client).await.map_err(query_error)
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(anyhow::anyhow!(
                    "timed out after {:?}",
                    self.timeout
                )))
            })
    }
}

/// One row or none, through the connection's statement cache.
async fn query_opt(
    client: &deadpool_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Option<Row>, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.query_opt(&statement, params).await
}

/// The columns every user query selects, in `user_from_row`'s terms.
macro_rules! select_user {
    ($where:literal) => {
        concat!(
            "SELECT id, username, email, password_hash, created_at, disabled_at FROM users ",
            $where
        )
    };
}

fn user_from_row(row: &Row) -> User {
    User {
        id: UserId(row.get("id")),
        username: row.get("username"),
        email: row.get("email"),
        password_hash: row.get("password_hash"),
        created_at: row.get("created_at"),
        disabled_at: row.get("disabled_at"),
    }
}

fn pool_error(err: PoolError) -> StoreError {
    match err {
        PoolError::Backend(err) => query_error(err),
        other => StoreError::Unavailable(other.into()),
    }
}

/// Errors the server reported are failures; anything else (refused, reset,
/// closed) means the server is out of reach.
fn query_error(err: tokio_postgres::Error) -> StoreError {
    let Some(db) = err.as_db_error() else {
        return StoreError::Unavailable(err.into());
    };
    let code = db.code();
    if code.code().starts_with("08") || code == &SqlState::ADMIN_SHUTDOWN {
        StoreError::Unavailable(err.into())
    } else {
        StoreError::Failed(err.into())
    }
}

/// What a unique index refused, if that is why an insert failed.
fn taken(err: &tokio_postgres::Error) -> Option<Taken> {
    let db = err.as_db_error()?;
    match (db.code(), db.constraint()) {
        (&SqlState::UNIQUE_VIOLATION, Some("users_username_key")) => Some(Taken::Username),
        (&SqlState::UNIQUE_VIOLATION, Some("users_email_key")) => Some(Taken::Email),
        _ => None,
    }
}

#[async_trait]
impl UserStore for PostgresUserStore {
    async fn insert(&self, new: NewUser) -> Result<Result<User, Taken>, StoreError> {
        let user = User::from(new);
        let inserted = self
            .with_client(async |client| {
                let statement = client
                    .prepare_cached(
                        "INSERT INTO users (id, username, email, password_hash, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                    )
                    .await?;
                let row = [
                    &user.id.0 as &(dyn tokio_postgres::types::ToSql + Sync),
                    &user.username,
                    &user.email,
                    &user.password_hash,
                    &user.created_at,
                ];
                match client.execute(&statement, &row).await {
                    Ok(_) => Ok(Ok(())),
                    Err(err) => taken(&err).map(Err).ok_or(err),
                }
            })
            .await?;
        Ok(inserted.map(|()| user))
    }

    async fn find_by_login(&self, login: &Login) -> Result<Option<User>, StoreError> {
        let (sql, key) = match login {
            Login::Username(name) => (
                select_user!("WHERE lower(username) = lower($1)"),
                name.as_str(),
            ),
            Login::Email(email) => (
                select_user!("WHERE lower(email) = lower($1)"),
                email.as_str(),
            ),
        };
        let row = self
            .with_client(async |client| query_opt(client, sql, &[&key]).await)
            .await?;
        Ok(row.as_ref().map(user_from_row))
    }

    async fn find_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let sql = select_user!("WHERE id = $1");
        let row = self
            .with_client(async |client| query_opt(client, sql, &[&id.0]).await)
            .await?;
        Ok(row.as_ref().map(user_from_row))
    }

    async fn replace_password_hash(
        &self,
        id: UserId,
        current: &str,
        new: &str,
    ) -> Result<bool, StoreError> {
        let updated = self
            .with_client(async |client| {
                let statement = client
                    .prepare_cached(
                        "UPDATE users SET password_hash = $3, updated_at = now() \
                         WHERE id = $1 AND password_hash = $2",
                    )
                    .await?;
                client.execute(&statement, &[&id.0, &current, &new]).await
            })
            .await?;
        Ok(updated == 1)
    }

    async fn set_disabled(
        &self,
        id: UserId,
        at: Option<DateTime<Utc>>,
    ) -> Result<Option<User>, StoreError> {
        let sql = "UPDATE users SET disabled_at = CASE WHEN $2::timestamptz IS NULL THEN NULL \
             ELSE coalesce(disabled_at, $2) END, updated_at = now() WHERE id = $1 \
             RETURNING id, username, email, password_hash, created_at, disabled_at";
        let row = self
            .with_client(async |client| query_opt(client, sql, &[&id.0, &at]).await)
            .await?;
        Ok(row.as_ref().map(user_from_row))
    }

    async fn list(&self, query: &UserQuery) -> Result<Vec<User>, StoreError> {
        let sql = select_user!(
            "WHERE ($1::text IS NULL OR lower(username) LIKE $1 OR lower(email) LIKE $1) \
             AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3)) \
             ORDER BY created_at DESC, id DESC LIMIT $4"
        );
        let pattern = query.contains.as_deref().map(|part| {
            // LIKE's own characters, escaped with its default escape `\`.
            let escaped = part
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        });
        let (after_time, after_id) = match query.after {
            Some(after) => (Some(after.created_at), after.id.0),
            None => (None, uuid::Uuid::nil()),
        };
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let rows = self
            .with_client(async |client| {
                let statement = client.prepare_cached(sql).await?;
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                    [&pattern, &after_time, &after_id, &limit];
                client.query(&statement, &params).await
            })
            .await?;
        Ok(rows.iter().map(user_from_row).collect())
    }

    async fn delete(&self, id: UserId) -> Result<bool, StoreError> {
        let deleted = self
            .with_client(async |client| {
                let statement = client
                    .prepare_cached("DELETE FROM users WHERE id = $1")
                    .await?;
                client.execute(&statement, &[&id.0]).await
            })
            .await?;
        Ok(deleted == 1)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with_client(async |client| client.simple_query("SELECT 1").await)
            .await
            .map(drop)
    }

    fn name(&self) -> &'static str {
        "postgres"
    }
}
