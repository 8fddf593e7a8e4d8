//! The rebalancing pass: queued items whose projected completion at their center now
//! passes their due time move to the partner center that would read them first, under
//! the rules of routing at upload (groups, agreements, monthly caps), when that partner
//! would read them within their due time. Claimed and read items never move.
//!
//! A pass reads each center's open items and this month's routed counts once, decides
//! from that snapshot (kept up to date with its own moves), and writes only the moves:
//! each one conditional update (still queued, still at this center) with its record in
//! the same transaction, so passes on several API nodes at once never move an item
//! twice from one place. A backlog of thousands of late items costs one query per
//! center, not several per item.

use std::collections::HashMap;

use crate::catalog::{Catalog, CatalogError, OpenItem};

use super::{month_of, Projection, Router};

/// One item moved by a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub study_uid: String,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// A center's open items as the projection counts them.
#[derive(Debug, Default)]
struct Queue {
    claimed: u64,
    /// Queued items' reading-order keys (rank, due time), sorted.
    queued: Vec<(i64, i64)>,
}

impl Queue {
    fn of(items: &[OpenItem]) -> Queue {
        let mut q = Queue::default();
        for i in items {
            if i.state == "claimed" {
                q.claimed += 1;
            } else {
                q.queued.push((i.priority_rank, i.due_ms));
            }
        }
        q.queued.sort_unstable();
        q
    }

    /// Open items read before a study of reading-order key `key` (as
    /// `Catalog::open_ahead` counts them).
    fn ahead(&self, key: (i64, i64)) -> u64 {
        self.claimed + self.queued.partition_point(|k| *k <= key) as u64
    }

    fn add(&mut self, key: (i64, i64)) {
        let i = self.queued.partition_point(|k| *k < key);
        self.queued.insert(i, key);
    }

    fn remove(&mut self, key: (i64, i64)) {
        let i = self.queued.partition_point(|k| *k < key);
        if self.queued.get(i) == Some(&key) {
            self.queued.remove(i);
        }
    }
}

/// One pass over every center with a capacity, at `now_ms`; the items moved. Items
/// are taken in reading order, so urgent ones get the partners' spare capacity first.
pub async fn rebalance(
    router: &Router,
    catalog: &Catalog,
    now_ms: i64,
) -> Result<Vec<Moved>, CatalogError> {
    let mut moved = Vec::new();
    if !router.exchange {
        return Ok(moved);
    }
    let centers: Vec<String> = router
        .config
        .diagnosis_centers
        .iter()
        .filter(|d| router.calendars.contains_key(&d.id))
        .map(|d| d.id.clone())
        .collect();
    let mut items: HashMap<String, Vec<OpenItem>> = HashMap::new();
    let mut queues: HashMap<String, Queue> = HashMap::new();
    for c in &centers {
        let open = catalog.open_items(c).await?;
        queues.insert(c.clone(), Queue::of(&open));
        items.insert(c.clone(), open);
    }
    let mut used = router.routed_this_month(catalog, now_ms).await?;
    // Items this pass moved to each center, which its own turn then counts ahead.
    let mut arrived: HashMap<String, Queue> = HashMap::new();
    let (month, _, _) = month_of(now_ms, router.config.exchange.utc_offset_hours);
    for center in &centers {
        let Some(cal) = router.calendar(center) else {
            continue;
        };
        let mut position: u64 = 0;
        for item in items.remove(center).unwrap_or_default() {
            position += 1;
            if item.state != "queued" {
                continue;
            }
            let key = (item.priority_rank, item.due_ms);
            let place = position + arrived.get(center).map_or(0, |q| q.ahead(key));
            let here = cal.completion(now_ms, place);
            if here.is_some_and(|t| t <= item.due_ms) {
                continue;
            }
            let candidates =
                router
                    .partners(&item.home_center, center)
                    .into_iter()
                    .map(|(c, agreement)| {
                        let capped = agreement.is_some_and(|a| Router::capped(a, &used));
                        let projection = match (queues.get(c), router.calendar(c)) {
                            (Some(q), Some(cal)) if !capped => {
                                let ahead = q.ahead(key);
                                Some(Projection {
                                    ahead: ahead as i64,
                                    at_ms: cal.completion(now_ms, ahead + 1),
                                })
                            }
                            _ => None,
                        };
                        (c, agreement, capped, projection)
                    });
            let (best, _) = Router::choose(candidates);
            let Some((to, p)) = best else { continue };
            let stay = Projection {
                ahead: place as i64 - 1,
                at_ms: here,
            };
            // A move must make the item in time: moving one late item ahead of a
            // partner's own queue only to be late there too spreads the delay and
            // makes items bounce between centers.
            if !p.earlier_than(&stay) || p.at_ms.is_none_or(|t| t > item.due_ms) {
                continue;
            }
            let reason = format!(
                "moved by rebalancing at {}: {}, past the due time {}; {}",
                router.time(now_ms),
                router.describe(center, &stay),
                router.time(item.due_ms),
                router.describe(&to, &p)
            );
            if !catalog
                .move_item(item.id, center, &to, &reason, now_ms)
                .await?
            {
                continue;
            }
            // The items behind it at this center move up one place.
            position -= 1;
            if let Some(q) = queues.get_mut(center) {
                q.remove(key);
            }
            if let Some(q) = queues.get_mut(&to) {
                q.add(key);
            }
            arrived.entry(to.clone()).or_default().add(key);
            if let (Some(h), Some(r)) = (
                router.institution(&item.home_center),
                router.institution(&to),
            ) {
                if h != r {
                    *used.entry((h.to_owned(), r.to_owned())).or_default() += 1;
                }
            }
            tracing::info!(item = item.id, from = %center, to = %to, %month, "worklist item moved");
            moved.push(Moved {
                study_uid: item.study_uid,
                from: center.clone(),
                to,
                reason,
            });
        }
    }
    Ok(moved)
}
