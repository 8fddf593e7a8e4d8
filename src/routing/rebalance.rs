//! The rebalancing pass: queued items whose projected completion at their center now
//! passes their due time move to a partner center that would read them earlier, under
//! the rules of routing at upload (groups, agreements, monthly caps). Claimed and read
//! items never move. Each move is one conditional update (still queued, still at this
//! center) with its record in the same transaction, so passes on several API nodes at
//! once never move an item twice from one place.

use crate::catalog::{Catalog, CatalogError};

use super::Router;

/// One item moved by a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub study_uid: String,
    pub from: String,
    pub to: String,
    pub reason: String,
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
    for center in centers {
        let Some(cal) = router.calendar(&center) else {
            continue;
        };
        let mut position: u64 = 0;
        for item in catalog.open_items(&center).await? {
            position += 1;
            if item.state != "queued" {
                continue;
            }
            let here = cal.completion(now_ms, position);
            if here.is_some_and(|t| t <= item.due_ms) {
                continue;
            }
            let (best, _) = router
                .best_partner(
                    catalog,
                    &item.home_center,
                    &center,
                    item.priority_rank,
                    item.due_ms,
                    now_ms,
                )
                .await?;
            let Some((to, p)) = best else { continue };
            let stay = super::Projection {
                ahead: position as i64 - 1,
                at_ms: here,
            };
            if !p.earlier_than(&stay) {
                continue;
            }
            let reason = format!(
                "moved by rebalancing at {}: {}, past the due time {}; {}",
                router.time(now_ms),
                router.describe(&center, &stay),
                router.time(item.due_ms),
                router.describe(&to, &p)
            );
            if catalog
                .move_item(item.id, &center, &to, &reason, now_ms)
                .await?
            {
                // The items behind it at this center move up one place.
                position -= 1;
                tracing::info!(item = item.id, from = %center, to = %to, "worklist item moved");
                moved.push(Moved {
                    study_uid: item.study_uid,
                    from: center.clone(),
                    to,
                    reason,
                });
            }
        }
    }
    Ok(moved)
}
