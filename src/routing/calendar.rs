//! A diagnosis center's reading calendar: how many studies it reads on each day, and
//! when the n-th read from now will be done.
//!
//! A day's capacity is spread evenly over the program's reading hours, in the
//! program's time zone (`[exchange]`): working days read `reads_per_day`, holidays
//! nothing, and an override replaces the day's number. Projections are estimates for
//! routing, not promises: absences and claims that take long are not foreseen.

use std::collections::{HashMap, HashSet};

use chrono::{Datelike, NaiveDate, Weekday};

use crate::config::{Capacity, ExchangeConfig};
use crate::triage::DAY_MS;

const HOUR_MS: i64 = 3600 * 1000;
/// Projections stop here: a center that cannot read a study within a year of
/// working days is "never" (`None`).
pub const HORIZON_DAYS: i64 = 400;

#[derive(Debug, Clone)]
pub struct Calendar {
    reads_per_day: f64,
    working: [bool; 7],
    holidays: HashSet<NaiveDate>,
    overrides: HashMap<NaiveDate, f64>,
    /// Milliseconds to add to UTC to get the program's local time.
    offset_ms: i64,
    /// Reading hours, in milliseconds from local midnight.
    open_ms: i64,
    close_ms: i64,
}

/// "YYYY-MM-DD" as a date, or why not.
pub fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| format!("`{s}` is not a date YYYY-MM-DD"))
}

fn weekday(s: &str) -> Option<Weekday> {
    Some(match s {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    })
}

impl Calendar {
    /// The calendar of `capacity` under the program's clock, or what is wrong with it.
    pub fn new(capacity: &Capacity, exchange: &ExchangeConfig) -> Result<Calendar, String> {
        let finite = |x: f64| x.is_finite() && x >= 0.0;
        if !(finite(capacity.reads_per_day) && capacity.reads_per_day > 0.0) {
            return Err("reads_per_day must be a number > 0".into());
        }
        let mut working = [false; 7];
        for d in &capacity.working_days {
            let w = weekday(d).ok_or_else(|| format!("`{d}` is not a day (mon .. sun)"))?;
            working[w.num_days_from_monday() as usize] = true;
        }
        if !working.contains(&true) {
            return Err("working_days names no day".into());
        }
        let holidays = capacity
            .holidays
            .iter()
            .map(|d| parse_date(d))
            .collect::<Result<_, _>>()?;
        let mut overrides = HashMap::new();
        for o in &capacity.overrides {
            if !finite(o.reads) {
                return Err(format!(
                    "the override of {} must read a number >= 0",
                    o.date
                ));
            }
            if overrides.insert(parse_date(&o.date)?, o.reads).is_some() {
                return Err(format!("{} is overridden twice", o.date));
            }
        }
        let [open, close] = exchange.reading_hours;
        Ok(Calendar {
            reads_per_day: capacity.reads_per_day,
            working,
            holidays,
            overrides,
            offset_ms: exchange.utc_offset_hours as i64 * HOUR_MS,
            open_ms: open as i64 * HOUR_MS,
            close_ms: close as i64 * HOUR_MS,
        })
    }

    /// The same calendar at `factor` times the capacity (the simulation's "a center
    /// at half capacity").
    pub fn scaled(&self, factor: f64) -> Calendar {
        let mut c = self.clone();
        c.reads_per_day *= factor;
        c.overrides.values_mut().for_each(|r| *r *= factor);
        c
    }

    pub fn reads_per_day(&self) -> f64 {
        self.reads_per_day
    }

    /// Studies read on `date`.
    pub fn reads_on(&self, date: NaiveDate) -> f64 {
        if let Some(r) = self.overrides.get(&date) {
            return *r;
        }
        if self.holidays.contains(&date)
            || !self.working[date.weekday().num_days_from_monday() as usize]
        {
            return 0.0;
        }
        self.reads_per_day
    }

    /// The local date of a UTC instant, and the local day's start as a UTC instant.
    pub fn local_day(&self, at_ms: i64) -> (NaiveDate, i64) {
        let day = (at_ms + self.offset_ms).div_euclid(DAY_MS);
        (epoch_date(day), day * DAY_MS - self.offset_ms)
    }

    /// When the `n`-th read from `now_ms` on is done (n = 1: the next study read),
    /// reading at this calendar's capacity through its reading hours; `None` beyond
    /// [`HORIZON_DAYS`].
    pub fn completion(&self, now_ms: i64, n: u64) -> Option<i64> {
        let mut left = n as f64;
        let (_, mut day_start) = self.local_day(now_ms);
        let hours = (self.close_ms - self.open_ms) as f64;
        for _ in 0..HORIZON_DAYS {
            let (date, _) = self.local_day(day_start);
            let reads = self.reads_on(date);
            let from = (day_start + self.open_ms).max(now_ms);
            let to = day_start + self.close_ms;
            if reads > 0.0 && from < to {
                let available = reads * (to - from) as f64 / hours;
                if left <= available {
                    return Some(from + (left / reads * hours).ceil() as i64);
                }
                left -= available;
            }
            day_start += DAY_MS;
        }
        None
    }
}

/// The date `days` after 1970-01-01.
fn epoch_date(days: i64) -> NaiveDate {
    NaiveDate::from_num_days_from_ce_opt(719_163 + days as i32).unwrap_or(NaiveDate::MAX)
}

/// The local calendar month holding `at_ms` as `[start, end)` UTC instants, and its
/// name "YYYY-MM", in a time zone `utc_offset_hours` east of UTC.
pub fn month_of(at_ms: i64, utc_offset_hours: i32) -> (String, i64, i64) {
    let offset = utc_offset_hours as i64 * HOUR_MS;
    let date = epoch_date((at_ms + offset).div_euclid(DAY_MS));
    let name = format!("{:04}-{:02}", date.year(), date.month());
    let (start, end) = month_bounds(date.year(), date.month(), utc_offset_hours);
    (name, start, end)
}

/// `[start, end)` of a local calendar month as UTC instants.
pub fn month_bounds(year: i32, month: u32, utc_offset_hours: i32) -> (i64, i64) {
    let offset = utc_offset_hours as i64 * HOUR_MS;
    let first = NaiveDate::from_ymd_opt(year, month, 1).unwrap_or(NaiveDate::MIN);
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)
    }
    .unwrap_or(NaiveDate::MAX);
    let ms = |d: NaiveDate| (d.num_days_from_ce() as i64 - 719_163) * DAY_MS - offset;
    (ms(first), ms(next))
}

/// A UTC instant as local "YYYY-MM-DD HH:MM" (reasons shown to people).
pub fn local_time(at_ms: i64, utc_offset_hours: i32) -> String {
    let local = at_ms + utc_offset_hours as i64 * HOUR_MS;
    let date = epoch_date(local.div_euclid(DAY_MS));
    let min = local.rem_euclid(DAY_MS) / 60_000;
    format!("{date} {:02}:{:02}", min / 60, min % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal(reads: f64, holidays: &[&str]) -> Calendar {
        let cap = Capacity {
            reads_per_day: reads,
            working_days: ["mon", "tue", "wed", "thu", "fri"]
                .map(String::from)
                .to_vec(),
            holidays: holidays.iter().map(|s| s.to_string()).collect(),
            overrides: vec![],
        };
        Calendar::new(&cap, &ExchangeConfig::default()).unwrap()
    }

    fn at(date: &str, hour: i64) -> i64 {
        let d = parse_date(date).unwrap();
        (d.num_days_from_ce() as i64 - 719_163) * DAY_MS + hour * HOUR_MS
    }

    #[test]
    fn reads_spread_over_the_reading_hours_of_working_days() {
        // Monday 2026-11-30, 08:00-16:00, 8 reads a day: one an hour.
        let c = cal(8.0, &[]);
        assert_eq!(
            c.completion(at("2026-11-30", 0), 1),
            Some(at("2026-11-30", 9))
        );
        assert_eq!(
            c.completion(at("2026-11-30", 12), 1),
            Some(at("2026-11-30", 13))
        );
        // The 5th read from Monday noon: 4 that day, the 5th at Tuesday 09:00.
        assert_eq!(
            c.completion(at("2026-11-30", 12), 5),
            Some(at("2026-12-01", 9))
        );
        // From Friday evening: Monday.
        assert_eq!(
            c.completion(at("2026-12-04", 17), 1),
            Some(at("2026-12-07", 9))
        );
    }

    #[test]
    fn holidays_and_overrides_change_the_day() {
        let c = cal(8.0, &["2026-12-01"]);
        assert_eq!(
            c.completion(at("2026-11-30", 17), 1),
            Some(at("2026-12-02", 9))
        );
        assert_eq!(c.reads_on(parse_date("2026-12-05").unwrap()), 0.0);
        assert_eq!(month_of(at("2026-12-31", 23), 0).0, "2026-12");
        assert_eq!(month_of(at("2026-12-31", 23), 2).0, "2027-01");
        assert_eq!(local_time(at("2026-11-30", 9), -6), "2026-11-30 03:00");
    }
}
