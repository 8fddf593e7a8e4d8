//! What routing by projected completion reads and writes: the open items ahead of a
//! study at a center, the studies routed between centers in a month (monthly caps),
//! moves of queued items by the rebalancing pass, and reads done per pair of centers
//! (the accounts). Institutions are not in the catalog: `src/routing/` maps centers to
//! them from the configuration.

use serde::Serialize;

use super::{Catalog, Db, NewItem, Result};

/// An open worklist item, as the rebalancing pass sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OpenItem {
    pub id: i64,
    pub study_uid: String,
    pub state: String,
    pub priority_rank: i64,
    pub due_ms: i64,
    pub home_center: String,
}

/// One move of a worklist item from a center to another.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ItemMove {
    pub from_center: String,
    pub to_center: String,
    pub reason: String,
    pub moved_ms: i64,
}

/// A count per (home center, center that reads) pair.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CenterPairCount {
    pub home_center: String,
    pub center: String,
    pub count: i64,
}

impl Catalog {
    /// How many open items of `center` are read before a study of priority rank
    /// `rank` due at `due_ms`: every claimed item (being read), and the queued ones
    /// ahead of it in reading order (rank, then due time).
    pub async fn open_ahead(&self, center: &str, rank: i64, due_ms: i64) -> Result<i64> {
        let n: i64 = on_db!(&self.db, pool, pg => {
            sqlx::query_scalar(
                "SELECT
                   (SELECT COUNT(*) FROM worklist_items WHERE center_id = $1 AND state = 'claimed')
                 + (SELECT COUNT(*) FROM worklist_items WHERE center_id = $1 AND state = 'queued'
                      AND (priority_rank < $2 OR (priority_rank = $2 AND due_ms <= $3)))",
            )
            .bind(center)
            .bind(rank)
            .bind(due_ms)
            .fetch_one(pool)
            .await?
        });
        Ok(n)
    }

    /// Items put on a center other than their home one within `[from_ms, to_ms)`
    /// (at upload or by a move), per pair of centers.
    pub async fn routed_away(&self, from_ms: i64, to_ms: i64) -> Result<Vec<CenterPairCount>> {
        Ok(on_db!(&self.db, pool, pg => {
            sqlx::query_as(
                "SELECT home_center_id AS home_center, center_id AS center, COUNT(*) AS count
                 FROM worklist_items
                 WHERE routed_ms >= $1 AND routed_ms < $2 AND home_center_id <> center_id
                 GROUP BY home_center_id, center_id ORDER BY home_center_id, center_id",
            )
            .bind(from_ms)
            .bind(to_ms)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Reads recorded within `[from_ms, to_ms)`, per pair (home center, center that read).
    pub async fn reads_by_center_pair(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<CenterPairCount>> {
        Ok(on_db!(&self.db, pool, pg => {
            sqlx::query_as(
                "SELECT COALESCE(w.home_center_id, w.center_id) AS home_center, w.center_id AS center,
                        COUNT(*) AS count
                 FROM readings r JOIN worklist_items w ON w.id = r.worklist_item_id
                 WHERE r.created_ms >= $1 AND r.created_ms < $2
                 GROUP BY COALESCE(w.home_center_id, w.center_id), w.center_id
                 ORDER BY 1, 2",
            )
            .bind(from_ms)
            .bind(to_ms)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The open items of `center` in reading order: claimed ones first (they are being
    /// read), then queued by rank, due time and id.
    pub async fn open_items(&self, center: &str) -> Result<Vec<OpenItem>> {
        Ok(on_db!(&self.db, pool, pg => {
            sqlx::query_as(
                "SELECT id, study_uid, state, priority_rank, due_ms,
                        COALESCE(home_center_id, center_id) AS home_center
                 FROM worklist_items WHERE center_id = $1 AND state IN ('queued', 'claimed')
                 ORDER BY CASE WHEN state = 'claimed' THEN 0 ELSE 1 END, priority_rank, due_ms, id",
            )
            .bind(center)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Moves item `item_id` from `from` to `to` if it is still queued at `from`, and
    /// records the move, in one transaction; `false` if it was claimed, read or moved
    /// meanwhile (another node's pass, a radiologist), and then nothing changes.
    pub async fn move_item(
        &self,
        item_id: i64,
        from: &str,
        to: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<bool> {
        on_db!(&self.db, pool, pg => {
            let mut tx = pool.begin().await?;
            let study: Option<String> = sqlx::query_scalar(
                "UPDATE worklist_items SET center_id = $3, routed_ms = $4, reason = reason || '; ' || $5
                 WHERE id = $1 AND center_id = $2 AND state = 'queued'
                 RETURNING study_uid",
            )
            .bind(item_id)
            .bind(from)
            .bind(to)
            .bind(now_ms)
            .bind(reason)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(study) = study else {
                tx.rollback().await?;
                return Ok(false);
            };
            sqlx::query(
                "INSERT INTO worklist_moves (item_id, study_uid, from_center, to_center, reason, moved_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(item_id)
            .bind(&study)
            .bind(from)
            .bind(to)
            .bind(reason)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(true)
    }

    /// The moves of a study's worklist item, oldest first.
    pub async fn item_moves(&self, study_uid: &str) -> Result<Vec<ItemMove>> {
        Ok(on_db!(&self.db, pool, pg => {
            sqlx::query_as(
                "SELECT from_center, to_center, reason, moved_ms FROM worklist_moves
                 WHERE study_uid = $1 ORDER BY id",
            )
            .bind(study_uid)
            .fetch_all(pool)
            .await?
        }))
    }
}

/// A study's path through a simulated year (`tamiz simulate`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SimulatedStudy {
    pub home_center: String,
    pub center: String,
    pub priority: String,
    pub received_ms: i64,
    pub due_ms: i64,
    pub read_ms: Option<i64>,
}

impl Catalog {
    /// Simulation only: a study received at `received_ms` from `imaging_center`, put on
    /// a worklist as `item` says (the simulation has no instances, jobs or model: it
    /// exercises routing). Two statements without a transaction: each round trip to
    /// SQLite's thread is most of a simulated study's cost, and a scratch catalog needs
    /// no atomicity. Its patient is the one of [`Catalog::sim_patient`].
    #[doc(hidden)]
    pub async fn sim_place(
        &self,
        study_uid: &str,
        imaging_center: &str,
        received_ms: i64,
        item: &NewItem,
    ) -> Result<()> {
        on_db!(&self.db, pool, pg => {
            sqlx::query(
                "INSERT INTO studies (study_uid, patient_id, imaging_center, state, first_received_ms,
                     last_received_ms, ready_ms, ready_reason)
                 VALUES ($1, (SELECT id FROM patients WHERE pseudo_key = 'simulation'), $2, 'worklisted', $3, $3, $3, 'simulated')",
            )
            .bind(study_uid)
            .bind(imaging_center)
            .bind(received_ms)
            .execute(pool)
            .await?;
            insert_item!(pool, item, study_uid, received_ms);
        });
        Ok(())
    }

    /// Simulation only: the one pseudonymous patient of simulated studies.
    #[doc(hidden)]
    pub async fn sim_patient(&self) -> Result<()> {
        on_db!(&self.db, pool, pg => {
            sqlx::query(
                "INSERT INTO patients (pseudo_key) VALUES ('simulation') ON CONFLICT (pseudo_key) DO NOTHING",
            )
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Simulation only: `center` reads its next `n` queued items in reading order at
    /// `at_ms` (as `claim_next` picks them); how many it read.
    #[doc(hidden)]
    pub async fn sim_read(&self, center: &str, n: i64, at_ms: i64) -> Result<u64> {
        let read = on_db!(&self.db, pool, pg => {
            let mut tx = pool.begin().await?;
            let ids: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM worklist_items WHERE center_id = $1 AND state = 'queued'
                 ORDER BY priority_rank, due_ms, id LIMIT $2",
            )
            .bind(center)
            .bind(n)
            .fetch_all(&mut *tx)
            .await?;
            if !ids.is_empty() {
                // Integers only: the list is safe to write into the statement.
                let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
                sqlx::query(&format!(
                    "INSERT INTO readings (worklist_item_id, study_uid, radiologist, birads, density, created_ms)
                     SELECT id, study_uid, 'simulation', 1, 'B', $1 FROM worklist_items WHERE id IN ({list})"
                ))
                .bind(at_ms)
                .execute(&mut *tx)
                .await?;
                sqlx::query(&format!(
                    "UPDATE worklist_items SET state = 'read', claimed_by = 'simulation', claimed_ms = $1
                     WHERE id IN ({list})"
                ))
                .bind(at_ms)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            ids.len() as u64
        });
        Ok(read)
    }

    /// Simulation only: every study with where it was read and when.
    #[doc(hidden)]
    pub async fn sim_results(&self) -> Result<Vec<SimulatedStudy>> {
        Ok(on_db!(&self.db, pool, pg => {
            sqlx::query_as(
                "SELECT COALESCE(w.home_center_id, w.center_id) AS home_center, w.center_id AS center,
                        w.priority, s.first_received_ms AS received_ms, w.due_ms, r.created_ms AS read_ms
                 FROM worklist_items w JOIN studies s ON s.study_uid = w.study_uid
                 LEFT JOIN readings r ON r.worklist_item_id = w.id",
            )
            .fetch_all(pool)
            .await?
        }))
    }
}
