//! Claims on files dropped in the bucket inbox, so that several API nodes scanning one
//! bucket do not ingest the same file at once. A claim is one upsert that takes a key
//! nobody holds or whose holder's claim expired (by the database clock); handling a
//! file is idempotent anyway (ingest answers "already stored", outcome objects are
//! written create-if-absent), so an expired claim taken over costs work, never data.

use super::{Catalog, Db, Result};

impl Catalog {
    /// Claims inbox object `key` for `owner` for `claim_ms`; false when another node
    /// holds a live claim on it.
    pub async fn claim_inbox(&self, key: &str, owner: &str, claim_ms: i64) -> Result<bool> {
        let now = self.clock_ms().await?;
        let taken: Option<String> = on_db!(&self.db, pool, pg => {
            sqlx::query_scalar(
                "INSERT INTO inbox_claims (object_key, owner, expires_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (object_key) DO UPDATE SET owner = excluded.owner, expires_ms = excluded.expires_ms
                 WHERE inbox_claims.expires_ms < $4
                 RETURNING owner",
            )
            .bind(key)
            .bind(owner)
            .bind(now + claim_ms)
            .bind(now)
            .fetch_optional(pool)
            .await?
        });
        Ok(taken.is_some())
    }

    /// Ends `owner`'s claim on `key` (the file was handled, or left for a later scan).
    pub async fn release_inbox(&self, key: &str, owner: &str) -> Result<()> {
        on_db!(&self.db, pool, pg => {
            sqlx::query("DELETE FROM inbox_claims WHERE object_key = $1 AND owner = $2")
                .bind(key)
                .bind(owner)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
