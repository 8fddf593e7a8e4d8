//! Credentials: API tokens for scripts and devices, and the user accounts they belong
//! to (`tamiz users ...`).
//!
//! A token is 32 random bytes (`tz_` + 64 hex digits), shown once when it is made and
//! stored only as HMAC-SHA256 under a key kept in a file outside the database (like the
//! pseudonym salt): a fast keyed hash, because the token is checked on every request
//! and is random (nothing to guess), and keyed, so a copy of the database alone does not
//! let anyone test tokens offline.

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::catalog::{Catalog, CatalogError, Role};
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token key file is missing, unreadable or not what it must be.
    #[error("token key: {0}")]
    Key(String),
    /// A request to add or change a user that cannot be honoured (the message says why).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// The key API tokens are hashed with.
#[derive(Clone)]
pub struct TokenKey {
    key: Vec<u8>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// Reads the configured key file (`[auth] token_key_file`, else `token.key` in the
    /// data directory). With SQLite a missing file is created with a new random key;
    /// with PostgreSQL it is an error, since every node must check tokens with the same
    /// key and two nodes must not each invent one.
    pub fn load(config: &Config) -> Result<TokenKey, AuthError> {
        let file = key_file(config);
        let key = match std::fs::read_to_string(&file) {
            Ok(text) => text.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let postgres = config
                    .catalog
                    .url
                    .as_deref()
                    .is_some_and(|u| u.starts_with("postgres"));
                if postgres {
                    return Err(AuthError::Key(format!(
                        "{} does not exist; with PostgreSQL every node must use the same key: \
                         create it once (`openssl rand -hex 32 > FILE`), give it to every node \
                         and name it in [auth] token_key_file or TAMIZ_TOKEN_KEY_FILE",
                        file.display()
                    )));
                }
                let key = hex::encode(rand::random::<[u8; 32]>());
                match crate::catalog::write_new_secret(&file, &key) {
                    Ok(()) => {
                        tracing::info!(file = %file.display(), "token key file created");
                        key
                    }
                    // Another process made it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        std::fs::read_to_string(&file)
                            .map_err(|e| {
                                AuthError::Key(format!("reading {}: {e}", file.display()))
                            })?
                            .trim()
                            .to_owned()
                    }
                    Err(e) => {
                        return Err(AuthError::Key(format!("writing {}: {e}", file.display())))
                    }
                }
            }
            Err(e) => return Err(AuthError::Key(format!("reading {}: {e}", file.display()))),
        };
        let bytes = hex::decode(&key)
            .ok()
            .filter(|k| k.len() >= 16)
            .ok_or_else(|| {
                AuthError::Key(format!(
                    "{} must hold at least 32 hex digits",
                    file.display()
                ))
            })?;
        Ok(TokenKey { key: bytes })
    }

    /// The hex HMAC-SHA256 of `token`: what the catalog stores and looks up.
    pub fn hash(&self, token: &str) -> String {
        // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        mac.update(token.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

fn key_file(config: &Config) -> PathBuf {
    config
        .auth
        .token_key_file
        .clone()
        .unwrap_or_else(|| default_key_file(&config.server.data_dir))
}

/// The default location of the token key file.
pub fn default_key_file(data_dir: &Path) -> PathBuf {
    data_dir.join("token.key")
}

/// A new API token: `tz_` and 64 hex digits.
pub fn new_token() -> String {
    format!("tz_{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// Argon2id parameters of new password hashes: the argon2 crate's defaults, OWASP's
/// recommendation (19 MiB, 2 passes, 1 lane); a stored hash carries its own, so
/// raising them later still verifies old passwords.
fn argon2() -> argon2::Argon2<'static> {
    argon2::Argon2::default()
}

/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Checks a new password: at least [`MIN_PASSWORD_CHARS`] characters, at most 1,024
/// bytes (the KDF's input stays bounded), no control characters.
pub fn check_password(password: &str) -> Result<(), AuthError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AuthError::Invalid(format!(
            "a password must have at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.len() > 1024 || password.chars().any(char::is_control) {
        return Err(AuthError::Invalid(
            "a password must be at most 1,024 bytes of printable characters".into(),
        ));
    }
    Ok(())
}

/// The Argon2id PHC string of `password` with a new random salt.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| AuthError::Invalid(format!("password salt: {e}")))?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Invalid(format!("hashing the password: {e}")))
}

/// Whether `password` matches the stored PHC string. With no stored hash (unknown
/// user, no password) it checks against a dummy hash, so that the answer takes as
/// long either way, and says no.
pub fn verify_password(stored: Option<&str>, password: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    static DUMMY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        hash_password(&hex::encode(rand::random::<[u8; 16]>())).unwrap_or_default()
    });
    let (phc, real) = match stored {
        Some(s) => (s, true),
        None => (DUMMY.as_str(), false),
    };
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let ok = argon2()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && real
}

/// Sets user `name`'s password (checked, then hashed); its open sessions end.
pub async fn set_password(catalog: &Catalog, name: &str, password: &str) -> Result<(), AuthError> {
    check_password(password)?;
    let password = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| AuthError::Invalid(format!("hashing the password: {e}")))??;
    catalog.set_password(name, &hash, crate::now_ms()).await?;
    Ok(())
}

/// Whether `s` has the shape of a token [`new_token`] makes (checked before hashing,
/// so that a credential of another kind is refused as such).
pub fn is_token_shaped(s: &str) -> bool {
    s.len() == 67
        && s.starts_with("tz_")
        && s[3..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks a new user against the configuration: a name of at most 64 letters, digits
/// and `. _ - @`; an imaging-center user names a configured imaging center, a
/// radiologist a configured diagnosis center; coordinators and admins belong to no
/// center (they see the program).
pub fn check_new_user(
    config: &Config,
    name: &str,
    role: Role,
    center: Option<&str>,
) -> Result<(), AuthError> {
    let invalid = |m: String| Err(AuthError::Invalid(m));
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
    {
        return invalid(format!(
            "user name `{}` must be 1 to 64 letters, digits or . _ - @",
            name.chars().take(80).collect::<String>()
        ));
    }
    match (role, center) {
        (Role::ImagingCenter, Some(c)) if config.imaging_center(c).is_some() => Ok(()),
        (Role::ImagingCenter, Some(c)) => invalid(format!(
            "`{c}` is not a configured imaging center (pipeline.toml [[imaging_centers]])"
        )),
        (Role::Radiologist, Some(c)) if config.diagnosis_centers.iter().any(|d| d.id == c) => {
            Ok(())
        }
        (Role::Radiologist, Some(c)) => invalid(format!(
            "`{c}` is not a configured diagnosis center (pipeline.toml [[diagnosis_centers]])"
        )),
        (Role::ImagingCenter | Role::Radiologist, None) => invalid(format!(
            "a user with role {} needs --center (the center whose data it works with)",
            role.as_str()
        )),
        (Role::Coordinator | Role::Admin, Some(_)) => invalid(format!(
            "a user with role {} belongs to no center: leave out --center",
            role.as_str()
        )),
        (Role::Coordinator | Role::Admin, None) => Ok(()),
    }
}

/// Adds a user and returns its first API token (shown once, stored as a hash).
pub async fn add_user(
    catalog: &Catalog,
    key: &TokenKey,
    config: &Config,
    name: &str,
    role: Role,
    center: Option<&str>,
) -> Result<String, AuthError> {
    check_new_user(config, name, role, center)?;
    let now = crate::now_ms();
    catalog.add_user(name, role, center, None, now).await?;
    issue_token(catalog, key, name).await
}

/// A new token for user `name`; its earlier tokens stay valid until revoked.
pub async fn issue_token(
    catalog: &Catalog,
    key: &TokenKey,
    name: &str,
) -> Result<String, AuthError> {
    let token = new_token();
    catalog
        .add_token(name, &key.hash(&token), crate::now_ms())
        .await?;
    Ok(token)
}
