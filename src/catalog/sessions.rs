//! Passwords, browser sessions and the sign-in failure count. A session cookie, like
//! an API token, is stored only as its keyed hash; a password only as its Argon2id
//! PHC string ([`crate::auth::hash_password`]).

use super::{Catalog, CatalogError, Db, Identity, Result, RoleText};

/// What a sign-in checks a password against.
#[derive(Debug, Clone)]
pub struct PasswordRecord {
    pub identity: Identity,
    /// Argon2id PHC string; `None` for a user without a password (tokens only).
    pub password_hash: Option<String>,
    pub disabled: bool,
}

/// A live session: who, and the CSRF token its state-changing requests must carry.
#[derive(Debug, Clone)]
pub struct SessionIdentity {
    pub identity: Identity,
    pub csrf_token: String,
}

impl Catalog {
    /// Sets (or replaces) user `name`'s password hash; ends the user's sessions.
    pub async fn set_password(&self, name: &str, password_hash: &str, now_ms: i64) -> Result<()> {
        let changed = on_db!(&self.db, pool, pg => {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query("UPDATE users SET password_hash = $2 WHERE name = $1")
                .bind(name)
                .bind(password_hash)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query(
                "UPDATE sessions SET ended_ms = $2
                 WHERE ended_ms IS NULL AND user_id = (SELECT id FROM users WHERE name = $1)",
            )
            .bind(name)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            changed
        });
        if changed == 0 {
            return Err(CatalogError::NotFound(format!("no user named `{name}`")));
        }
        Ok(())
    }

    /// The password record of user `name`, if the user exists.
    pub async fn password_record(&self, name: &str) -> Result<Option<PasswordRecord>> {
        type Row = (i64, String, String, Option<String>, Option<String>, bool);
        let row: Option<Row> = on_db!(&self.db, pool, pg => {
            sqlx::query_as(
                "SELECT id, name, role, center_id, password_hash, disabled FROM users WHERE name = $1",
            )
            .bind(name)
            .fetch_optional(pool)
            .await?
        });
        row.map(|(user_id, name, role, center, password_hash, disabled)| {
            Ok(PasswordRecord {
                identity: Identity {
                    user_id: Some(user_id),
                    name,
                    role: RoleText::try_from(role)?.0,
                    center,
                },
                password_hash,
                disabled,
            })
        })
        .transpose()
    }

    /// Records a new session (by its cookie's keyed hash).
    pub async fn create_session(
        &self,
        user_id: i64,
        token_hash: &str,
        csrf_token: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<()> {
        on_db!(&self.db, pool, pg => {
            sqlx::query(
                "INSERT INTO sessions (user_id, token_hash, csrf_token, created_ms, expires_ms)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(user_id)
            .bind(token_hash)
            .bind(csrf_token)
            .bind(now_ms)
            .bind(expires_ms)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The identity of a live session: not ended, not expired at `now_ms`, of an
    /// enabled user.
    pub async fn session_identity(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<SessionIdentity>> {
        type Row = (i64, String, String, Option<String>, String);
        let row: Option<Row> = on_db!(&self.db, pool, pg => {
            sqlx::query_as(
                "SELECT u.id, u.name, u.role, u.center_id, s.csrf_token
                 FROM sessions s JOIN users u ON u.id = s.user_id
                 WHERE s.token_hash = $1 AND s.ended_ms IS NULL AND s.expires_ms > $2 AND NOT u.disabled",
            )
            .bind(token_hash)
            .bind(now_ms)
            .fetch_optional(pool)
            .await?
        });
        row.map(|(user_id, name, role, center, csrf_token)| {
            Ok(SessionIdentity {
                identity: Identity {
                    user_id: Some(user_id),
                    name,
                    role: RoleText::try_from(role)?.0,
                    center,
                },
                csrf_token,
            })
        })
        .transpose()
    }

    /// Ends a session (sign-out); ending one already ended changes nothing.
    pub async fn end_session(&self, token_hash: &str, now_ms: i64) -> Result<()> {
        on_db!(&self.db, pool, pg => {
            sqlx::query("UPDATE sessions SET ended_ms = $2 WHERE token_hash = $1 AND ended_ms IS NULL")
                .bind(token_hash)
                .bind(now_ms)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Records a failed sign-in of `user_name` from `address`.
    pub async fn record_signin_failure(
        &self,
        user_name: &str,
        address: Option<&str>,
        now_ms: i64,
    ) -> Result<()> {
        on_db!(&self.db, pool, pg => {
            sqlx::query("INSERT INTO signin_failures (user_name, address, at_ms) VALUES ($1, $2, $3)")
                .bind(user_name)
                .bind(address)
                .bind(now_ms)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Failed sign-ins since `since_ms`: of `user_name` (from anywhere), and from
    /// `address` (for any name).
    pub async fn signin_failures_since(
        &self,
        user_name: &str,
        address: Option<&str>,
        since_ms: i64,
    ) -> Result<(i64, i64)> {
        Ok(on_db!(&self.db, pool, pg => {
            let by_name: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM signin_failures WHERE user_name = $1 AND at_ms >= $2",
            )
            .bind(user_name)
            .bind(since_ms)
            .fetch_one(pool)
            .await?;
            let by_address: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM signin_failures WHERE address = $1 AND at_ms >= $2",
            )
            .bind(address)
            .bind(since_ms)
            .fetch_one(pool)
            .await?;
            (by_name, by_address)
        }))
    }
}
