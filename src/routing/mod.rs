//! Study → diagnosis center.
//!
//! Each imaging center has a home diagnosis center in `pipeline.toml`. Studies from a
//! center tamiz does not know still have to be read: they go to the configured
//! default center, and the reason says so ([`route`]).
//!
//! Exchange of services ([`Router`]): where diagnosis centers have a reading capacity
//! and share an exchange group, a study goes to its home center unless the home
//! center's projected completion for it (the open items ahead of it in reading
//! order, read at the center's capacity on its calendar) passes the study's due time.
//! Then it goes to the center of an allowed institution in the home center's groups
//! that would read it first, if that is earlier than home, within the agreements'
//! monthly caps. The rebalancing pass ([`rebalance`]) applies the same rules to queued
//! items later. Projections read the catalog at the moment of the decision: two
//! decisions taken at the same instant may each count without the other.

mod accounts;
mod calendar;
mod rebalance;

use std::collections::HashMap;

use crate::catalog::{Catalog, CatalogError};
use crate::config::{Agreement, Config};
use crate::triage::Priority;

pub use accounts::{accounts, parse_month, AccountLine, Accounts};
pub use calendar::{local_time, month_bounds, month_of, parse_date, Calendar, HORIZON_DAYS};
pub use rebalance::{rebalance, Moved};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub center: String,
    pub reason: String,
}

/// Picks the home diagnosis center for a study from `imaging_center` (if known).
pub fn route(config: &Config, imaging_center: Option<&str>) -> Route {
    match imaging_center.and_then(|id| config.imaging_center(id)) {
        Some(c) => Route {
            center: c.home.clone(),
            reason: format!("home diagnosis center of imaging center {}", c.id),
        },
        None => Route {
            center: config.default_diagnosis_center.clone(),
            reason: "imaging center not configured: default diagnosis center".into(),
        },
    }
}

/// Where a study is read, and where it would be read without exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub center: String,
    pub home: String,
    pub reason: String,
}

/// A projection of when a center would read a study.
#[derive(Debug, Clone, Copy)]
struct Projection {
    ahead: i64,
    /// `None`: not within [`HORIZON_DAYS`].
    at_ms: Option<i64>,
}

impl Projection {
    fn later_than(&self, t: i64) -> bool {
        self.at_ms.is_none_or(|at| at > t)
    }
    fn earlier_than(&self, other: &Projection) -> bool {
        match (self.at_ms, other.at_ms) {
            (Some(a), Some(b)) => a < b,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

/// The exchange rules of one configuration, with each center's calendar built once.
#[derive(Debug, Clone)]
pub struct Router {
    config: Config,
    calendars: HashMap<String, Calendar>,
    /// `false`: every study is read at home (the simulation's baseline).
    exchange: bool,
}

impl Router {
    /// The router of a validated configuration (a capacity that does not parse is
    /// left out; `Config::validate` refuses it first).
    pub fn new(config: &Config) -> Router {
        let calendars = config
            .diagnosis_centers
            .iter()
            .filter_map(|d| {
                let cap = d.capacity.as_ref()?;
                Some((d.id.clone(), Calendar::new(cap, &config.exchange).ok()?))
            })
            .collect();
        Router {
            config: config.clone(),
            calendars,
            exchange: true,
        }
    }

    /// Every study read at its home center, whatever the projections.
    pub fn home_only(mut self) -> Router {
        self.exchange = false;
        self
    }

    /// `center`'s capacity multiplied by `factor`.
    pub fn with_capacity_factor(mut self, center: &str, factor: f64) -> Router {
        if let Some(c) = self.calendars.get_mut(center) {
            *c = c.scaled(factor);
        }
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn calendar(&self, center: &str) -> Option<&Calendar> {
        self.calendars.get(center)
    }

    fn institution(&self, center: &str) -> Option<&str> {
        self.config.diagnosis_center(center)?.institution.as_deref()
    }

    /// Centers that may read a study whose home center is `home`, other than
    /// `current`: a capacity, a group shared with `home`, and the same institution as
    /// `home` or an allowed agreement from it (returned with the candidate).
    fn partners<'a>(&'a self, home: &str, current: &str) -> Vec<(&'a str, Option<&'a Agreement>)> {
        let Some(h) = self.config.diagnosis_center(home) else {
            return Vec::new();
        };
        let Some(home_inst) = h.institution.as_deref() else {
            return Vec::new();
        };
        self.config
            .diagnosis_centers
            .iter()
            .filter(|d| d.id != current && self.calendars.contains_key(&d.id))
            .filter(|d| d.id == h.id || d.groups.iter().any(|g| h.groups.contains(g)))
            .filter_map(|d| {
                let inst = d.institution.as_deref()?;
                if inst == home_inst {
                    return Some((d.id.as_str(), None));
                }
                let a = self.config.agreement(home_inst, inst)?;
                a.allowed.then_some((d.id.as_str(), Some(a)))
            })
            .collect()
    }

    async fn project(
        &self,
        catalog: &Catalog,
        center: &str,
        rank: i64,
        due_ms: i64,
        now_ms: i64,
    ) -> Result<Option<Projection>, CatalogError> {
        let Some(cal) = self.calendars.get(center) else {
            return Ok(None);
        };
        let ahead = catalog.open_ahead(center, rank, due_ms).await?;
        Ok(Some(Projection {
            ahead,
            at_ms: cal.completion(now_ms, ahead as u64 + 1),
        }))
    }

    /// Studies routed this month (the month of `now_ms`) from each institution's centers
    /// to another institution's, keyed (home institution, reader institution).
    async fn routed_this_month(
        &self,
        catalog: &Catalog,
        now_ms: i64,
    ) -> Result<HashMap<(String, String), i64>, CatalogError> {
        let (_, from, to) = month_of(now_ms, self.config.exchange.utc_offset_hours);
        let mut used: HashMap<(String, String), i64> = HashMap::new();
        for p in catalog.routed_away(from, to).await? {
            if let (Some(h), Some(r)) = (
                self.institution(&p.home_center),
                self.institution(&p.center),
            ) {
                *used.entry((h.to_owned(), r.to_owned())).or_default() += p.count;
            }
        }
        Ok(used)
    }

    /// Whether `agreement`'s monthly cap is reached, given this month's routed counts.
    fn capped(agreement: &Agreement, used: &HashMap<(String, String), i64>) -> bool {
        agreement.monthly_cap.is_some_and(|cap| {
            used.get(&(agreement.home.clone(), agreement.reader.clone()))
                .copied()
                .unwrap_or(0)
                >= cap as i64
        })
    }

    /// The candidate that would read a study first, from each candidate's agreement
    /// (another institution's), whether that agreement's cap is reached, and its
    /// projection; with a note on each candidate skipped for its cap. Ties go to the
    /// first candidate (the configuration's order).
    fn choose<'a>(
        candidates: impl IntoIterator<Item = (&'a str, Option<&'a Agreement>, bool, Option<Projection>)>,
    ) -> (Option<(String, Projection)>, Vec<String>) {
        let mut best: Option<(String, Projection)> = None;
        let mut notes = Vec::new();
        for (center, agreement, capped, projection) in candidates {
            if capped {
                if let Some(a) = agreement {
                    notes.push(format!(
                        "{center} skipped: the {} -> {} monthly cap of {} is reached",
                        a.home,
                        a.reader,
                        a.monthly_cap.unwrap_or(0)
                    ));
                }
                continue;
            }
            let Some(p) = projection else { continue };
            if best.as_ref().is_none_or(|(_, b)| p.earlier_than(b)) {
                best = Some((center.to_owned(), p));
            }
        }
        (best, notes)
    }

    /// The partner of `home` (other than `current`) that would read a study of this
    /// rank and due time first, as the catalog stands now.
    async fn best_partner(
        &self,
        catalog: &Catalog,
        home: &str,
        current: &str,
        rank: i64,
        due_ms: i64,
        now_ms: i64,
    ) -> Result<(Option<(String, Projection)>, Vec<String>), CatalogError> {
        let partners = self.partners(home, current);
        let used = if partners
            .iter()
            .any(|(_, a)| a.is_some_and(|a| a.monthly_cap.is_some()))
        {
            self.routed_this_month(catalog, now_ms).await?
        } else {
            HashMap::new()
        };
        let mut candidates = Vec::new();
        for (center, agreement) in partners {
            let capped = agreement.is_some_and(|a| Self::capped(a, &used));
            let projection = if capped {
                None
            } else {
                self.project(catalog, center, rank, due_ms, now_ms).await?
            };
            candidates.push((center, agreement, capped, projection));
        }
        Ok(Self::choose(candidates))
    }

    fn describe(&self, center: &str, p: &Projection) -> String {
        let cap = self
            .calendars
            .get(center)
            .map_or(0.0, |c| c.reads_per_day());
        let when = match p.at_ms {
            Some(t) => format!("projected read {}", self.time(t)),
            None => format!("not projected within {HORIZON_DAYS} days"),
        };
        format!("{center}: {} ahead at {cap}/day, {when}", p.ahead)
    }

    fn time(&self, t: i64) -> String {
        local_time(t, self.config.exchange.utc_offset_hours)
    }

    /// Where a study from `imaging_center` of `priority`, due at `due_ms`, is read,
    /// decided at `now_ms` (see the module's documentation).
    pub async fn route(
        &self,
        catalog: &Catalog,
        imaging_center: Option<&str>,
        priority: Priority,
        due_ms: i64,
        now_ms: i64,
    ) -> Result<Decision, CatalogError> {
        let home = route(&self.config, imaging_center);
        let stay = |reason: String| Decision {
            center: home.center.clone(),
            home: home.center.clone(),
            reason,
        };
        if !self.exchange {
            return Ok(stay(home.reason.clone()));
        }
        let rank = priority.rank();
        let Some(at_home) = self
            .project(catalog, &home.center, rank, due_ms, now_ms)
            .await?
        else {
            return Ok(stay(home.reason.clone()));
        };
        let home_text = format!("{}; {}", home.reason, self.describe(&home.center, &at_home));
        if !at_home.later_than(due_ms) {
            return Ok(stay(home_text));
        }
        let due = self.time(due_ms);
        let (best, notes) = self
            .best_partner(catalog, &home.center, &home.center, rank, due_ms, now_ms)
            .await?;
        let mut skipped = String::new();
        for n in &notes {
            skipped.push_str("; ");
            skipped.push_str(n);
        }
        match best {
            Some((center, p)) if p.earlier_than(&at_home) => Ok(Decision {
                reason: format!(
                    "{home_text}, past the due time {due}; exchange to {}{skipped}",
                    self.describe(&center, &p)
                ),
                center,
                home: home.center.clone(),
            }),
            Some((center, p)) => Ok(stay(format!(
                "{home_text}, past the due time {due}; kept at home: no partner earlier (best {}){skipped}",
                self.describe(&center, &p)
            ))),
            None => Ok(stay(format!(
                "{home_text}, past the due time {due}; kept at home: no partner may read it{skipped}"
            ))),
        }
    }
}

/// Finds the configured imaging center for an upload: the center the uploader named,
/// else the one whose Institution Name matches.
pub fn identify_imaging_center(
    config: &Config,
    declared: Option<&str>,
    institution_name: Option<&str>,
) -> Option<String> {
    if let Some(id) = declared {
        if config.imaging_center(id).is_some() {
            return Some(id.to_owned());
        }
    }
    let name = institution_name?;
    config
        .imaging_centers
        .iter()
        .find(|c| c.id == name || c.name == name || c.institution_names.iter().any(|n| n == name))
        .map(|c| c.id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        toml::from_str(
            r#"
            default_diagnosis_center = "central"
            [[diagnosis_centers]]
            id = "central"
            name = "Central"
            [[diagnosis_centers]]
            id = "north"
            name = "North"
            [[imaging_centers]]
            id = "clinic-a"
            name = "Clinic A"
            home = "north"
            institution_names = ["CLINICA A"]
            "#,
        )
        .unwrap()
    }

    #[test]
    fn home_center_and_fallback() {
        let c = config();
        assert_eq!(route(&c, Some("clinic-a")).center, "north");
        let r = route(&c, None);
        assert_eq!(r.center, "central");
        assert!(r.reason.contains("not configured"));
    }

    #[test]
    fn center_from_header_or_institution() {
        let c = config();
        assert_eq!(
            identify_imaging_center(&c, Some("clinic-a"), None).as_deref(),
            Some("clinic-a")
        );
        assert_eq!(
            identify_imaging_center(&c, None, Some("CLINICA A")).as_deref(),
            Some("clinic-a")
        );
        assert_eq!(
            identify_imaging_center(&c, Some("nope"), Some("other")),
            None
        );
    }
}
