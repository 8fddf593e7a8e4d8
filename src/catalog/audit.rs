//! The audit log: who read or changed which study's patient data, when, from which
//! address and through which route. Rows are only ever appended (both backends'
//! migrations make UPDATE and DELETE on the table fail).

use serde::Serialize;

use super::{Catalog, Db, Identity, Result};

/// Who acts, through which route and from where: what a change of patient data needs
/// to write its audit row in the same transaction as the change.
#[derive(Debug, Clone, Copy)]
pub struct AuditContext<'a> {
    pub who: &'a Identity,
    /// The route template, as `METHOD /path/{param}`.
    pub route: &'a str,
    pub address: Option<&'a str>,
}

impl<'a> AuditContext<'a> {
    pub fn entry(
        &self,
        action: &'a str,
        study_uid: Option<&'a str>,
        item_id: Option<i64>,
        center: Option<&'a str>,
        at_ms: i64,
    ) -> AuditEntry<'a> {
        AuditEntry {
            who: self.who,
            action,
            route: self.route,
            study_uid,
            item_id,
            center,
            address: self.address,
            at_ms,
        }
    }
}

/// Appends `$entry` (an [`AuditEntry`]) to the audit log through executor `$ex` (a
/// pool or a transaction of either backend).
macro_rules! insert_audit {
    ($ex:expr, $entry:expr) => {{
        let e: &$crate::catalog::AuditEntry<'_> = $entry;
        sqlx::query(
            "INSERT INTO audit_log (at_ms, user_id, user_name, role, action, route, study_uid, item_id, center_id, address)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(e.at_ms)
        .bind(e.who.user_id)
        .bind(&e.who.name)
        .bind(e.who.role.as_str())
        .bind(e.action)
        .bind(e.route)
        .bind(e.study_uid)
        .bind(e.item_id)
        .bind(e.center)
        .bind(e.address)
        .execute($ex)
        .await?
    }};
}

/// One audited action, about to be recorded.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    pub who: &'a Identity,
    /// What was done: `study.status`, `worklist.list`, `worklist.claim`,
    /// `worklist.release`, `reading.record`.
    pub action: &'a str,
    /// The route template, as `METHOD /path/{param}`.
    pub route: &'a str,
    pub study_uid: Option<&'a str>,
    pub item_id: Option<i64>,
    pub center: Option<&'a str>,
    /// The client's address as the server saw it.
    pub address: Option<&'a str>,
    pub at_ms: i64,
}

/// One row of the audit log, as an admin reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub at_ms: i64,
    pub user_name: String,
    pub role: String,
    pub action: String,
    pub route: String,
    pub study_uid: Option<String>,
    pub item_id: Option<i64>,
    pub center_id: Option<String>,
    pub address: Option<String>,
}

/// Which rows an admin asks for; every field narrows, none means all.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub user: Option<String>,
    pub study_uid: Option<String>,
    /// From this time (epoch ms), inclusive.
    pub since_ms: Option<i64>,
    /// Before this time (epoch ms), exclusive.
    pub until_ms: Option<i64>,
    /// Rows after this id (the previous page's last id).
    pub after_id: Option<i64>,
    pub limit: i64,
}

impl Catalog {
    /// Appends one row to the audit log.
    pub async fn record_audit(&self, e: &AuditEntry<'_>) -> Result<()> {
        on_db!(&self.db, pool, pg => {
            insert_audit!(pool, e);
        });
        Ok(())
    }

    /// Audit rows matching `q`, oldest first.
    pub async fn audit_log(&self, q: &AuditQuery) -> Result<Vec<AuditRow>> {
        Ok(on_db!(&self.db, pool, pg => {
            sqlx::query_as(
                "SELECT id, at_ms, user_name, role, action, route, study_uid, item_id, center_id, address
                 FROM audit_log
                 WHERE ($1 IS NULL OR user_name = $1)
                   AND ($2 IS NULL OR study_uid = $2)
                   AND ($3 IS NULL OR at_ms >= $3)
                   AND ($4 IS NULL OR at_ms < $4)
                   AND ($5 IS NULL OR id > $5)
                 ORDER BY id LIMIT $6",
            )
            .bind(q.user.as_deref())
            .bind(q.study_uid.as_deref())
            .bind(q.since_ms)
            .bind(q.until_ms)
            .bind(q.after_id)
            .bind(q.limit)
            .fetch_all(pool)
            .await?
        }))
    }
}
