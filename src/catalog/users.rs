//! Users and their API tokens. A token is stored only as its keyed hash
//! ([`crate::auth::TokenKey`]): the database never holds a usable credential, and a
//! token is checked with one indexed lookup.

use serde::Serialize;

use super::{Catalog, CatalogError, Db, Result};

/// What a user may do; every route states the roles it admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Uploads for its own imaging center; sees the status of its own uploads.
    ImagingCenter,
    /// Works its diagnosis center's worklist: claims, releases, reads.
    Radiologist,
    /// Program statistics and targets; no images, no patient identifiers.
    Coordinator,
    /// Users, centers, targets, audit; every route.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::ImagingCenter,
        Role::Radiologist,
        Role::Coordinator,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::ImagingCenter => "imaging_center",
            Role::Radiologist => "radiologist",
            Role::Coordinator => "coordinator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A user as listed (never with a credential).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct User {
    pub id: i64,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub role: RoleText,
    pub center_id: Option<String>,
    pub disabled: bool,
    /// Tokens issued and not revoked.
    pub active_tokens: i64,
}

/// A role as read from the database (the CHECK constraint keeps it valid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RoleText(pub Role);

impl TryFrom<String> for RoleText {
    type Error = CatalogError;
    fn try_from(s: String) -> Result<RoleText> {
        Role::parse(&s)
            .map(RoleText)
            .ok_or_else(|| CatalogError::Conflict(format!("unknown role `{s}` in the catalog")))
    }
}

/// Who a request acts for, from a valid token of an enabled user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user's row; `None` for a person signed in through the OIDC provider.
    pub user_id: Option<i64>,
    pub name: String,
    pub role: Role,
    pub center: Option<String>,
}

impl Catalog {
    /// Adds a user; a name already taken is a conflict.
    pub async fn add_user(
        &self,
        name: &str,
        role: Role,
        center: Option<&str>,
        password_hash: Option<&str>,
        now_ms: i64,
    ) -> Result<i64> {
        let id: Option<i64> = on_db!(&self.db, pool, pg => {
            sqlx::query_scalar(
                "INSERT INTO users (name, role, center_id, password_hash, created_ms)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING RETURNING id",
            )
            .bind(name)
            .bind(role.as_str())
            .bind(center)
            .bind(password_hash)
            .bind(now_ms)
            .fetch_optional(pool)
            .await?
        });
        id.ok_or_else(|| CatalogError::Conflict(format!("a user named `{name}` already exists")))
    }

    /// Every user, by name.
    pub async fn users(&self) -> Result<Vec<User>> {
        Ok(on_db!(&self.db, pool, pg => {
            sqlx::query_as(
                "SELECT u.id, u.name, u.role, u.center_id, u.disabled,
                     (SELECT COUNT(*) FROM api_tokens t WHERE t.user_id = u.id AND t.revoked_ms IS NULL) AS active_tokens
                 FROM users u ORDER BY u.name",
            )
            .fetch_all(pool)
            .await?
        }))
    }

    /// Disables (or enables) a user: a disabled user's tokens and sessions stop working.
    pub async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<()> {
        let changed = on_db!(&self.db, pool, pg => {
            sqlx::query("UPDATE users SET disabled = $2 WHERE name = $1")
                .bind(name)
                .bind(disabled)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if changed == 0 {
            return Err(CatalogError::NotFound(format!("no user named `{name}`")));
        }
        Ok(())
    }

    /// Records a new token (by its keyed hash) for user `name`.
    pub async fn add_token(&self, name: &str, token_hash: &str, now_ms: i64) -> Result<()> {
        let inserted = on_db!(&self.db, pool, pg => {
            sqlx::query(
                "INSERT INTO api_tokens (user_id, token_hash, created_ms)
                 SELECT id, $2, $3 FROM users WHERE name = $1",
            )
            .bind(name)
            .bind(token_hash)
            .bind(now_ms)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if inserted == 0 {
            return Err(CatalogError::NotFound(format!("no user named `{name}`")));
        }
        Ok(())
    }

    /// Revokes every token of user `name`; returns how many were live.
    pub async fn revoke_tokens(&self, name: &str, now_ms: i64) -> Result<u64> {
        let (known, revoked) = on_db!(&self.db, pool, pg => {
            let known: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE name = $1")
                .bind(name)
                .fetch_one(pool)
                .await?;
            let revoked = sqlx::query(
                "UPDATE api_tokens SET revoked_ms = $2
                 WHERE revoked_ms IS NULL AND user_id = (SELECT id FROM users WHERE name = $1)",
            )
            .bind(name)
            .bind(now_ms)
            .execute(pool)
            .await?
            .rows_affected();
            (known, revoked)
        });
        if known == 0 {
            return Err(CatalogError::NotFound(format!("no user named `{name}`")));
        }
        Ok(revoked)
    }

    /// The identity a token hash stands for: a live token of an enabled user.
    pub async fn identity_for_token(&self, token_hash: &str) -> Result<Option<Identity>> {
        let row: Option<(i64, String, String, Option<String>)> = on_db!(&self.db, pool, pg => {
            sqlx::query_as(
                "SELECT u.id, u.name, u.role, u.center_id FROM api_tokens t JOIN users u ON u.id = t.user_id
                 WHERE t.token_hash = $1 AND t.revoked_ms IS NULL AND NOT u.disabled",
            )
            .bind(token_hash)
            .fetch_optional(pool)
            .await?
        });
        row.map(|(user_id, name, role, center)| {
            Ok(Identity {
                user_id: Some(user_id),
                name,
                role: RoleText::try_from(role)?.0,
                center,
            })
        })
        .transpose()
    }
}
