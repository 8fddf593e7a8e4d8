//! The monthly accounts of the exchange: per ordered pair of institutions, the reads
//! one did for the other's beneficiaries in a calendar month (the program's time
//! zone) and the amount at the agreed price. Reads within one institution are not
//! exchange and are not listed.

use serde::Serialize;

use crate::catalog::{Catalog, CatalogError};
use crate::config::Config;

use super::calendar::month_bounds;

/// One line of the accounts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountLine {
    /// The institution that read.
    pub reader: String,
    /// The institution whose studies were read (and which pays).
    pub home: String,
    pub reads: i64,
    pub price_per_read: f64,
    pub amount: f64,
    /// `false`: these reads happened without an agreement in today's configuration
    /// (it changed since); they are listed at no price.
    pub agreement: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Accounts {
    /// "YYYY-MM".
    pub month: String,
    pub currency: String,
    pub lines: Vec<AccountLine>,
    pub total_reads: i64,
    pub total_amount: f64,
}

/// "YYYY-MM" as (year, month), or why not.
pub fn parse_month(s: &str) -> Result<(i32, u32), String> {
    let bad = || format!("month must be YYYY-MM (for example 2026-12), not `{s}`");
    let (y, m) = s.split_once('-').ok_or_else(bad)?;
    if y.len() != 4 || m.len() != 2 {
        return Err(bad());
    }
    let year: i32 = y.parse().map_err(|_| bad())?;
    let month: u32 = m.parse().map_err(|_| bad())?;
    if !(1..=12).contains(&month) || !(1970..=9999).contains(&year) {
        return Err(bad());
    }
    Ok((year, month))
}

/// The accounts of `year`-`month`.
pub async fn accounts(
    config: &Config,
    catalog: &Catalog,
    year: i32,
    month: u32,
) -> Result<Accounts, CatalogError> {
    let (from, to) = month_bounds(year, month, config.exchange.utc_offset_hours);
    let institution = |center: &str| {
        config
            .diagnosis_center(center)
            .and_then(|d| d.institution.clone())
    };
    let mut lines: Vec<AccountLine> = Vec::new();
    for pair in catalog.reads_by_center_pair(from, to).await? {
        let (Some(home), Some(reader)) =
            (institution(&pair.home_center), institution(&pair.center))
        else {
            continue;
        };
        if home == reader {
            continue;
        }
        match lines
            .iter_mut()
            .find(|l| l.home == home && l.reader == reader)
        {
            Some(l) => l.reads += pair.count,
            None => {
                let a = config.agreement(&home, &reader);
                lines.push(AccountLine {
                    reader,
                    home,
                    reads: pair.count,
                    price_per_read: a.map_or(0.0, |a| a.price_per_read),
                    amount: 0.0,
                    agreement: a.is_some_and(|a| a.allowed),
                });
            }
        }
    }
    for l in &mut lines {
        l.amount = round_cents(l.reads as f64 * l.price_per_read);
    }
    lines.sort_by(|a, b| (&a.reader, &a.home).cmp(&(&b.reader, &b.home)));
    Ok(Accounts {
        month: format!("{year:04}-{month:02}"),
        currency: config.exchange.currency.clone(),
        total_reads: lines.iter().map(|l| l.reads).sum(),
        total_amount: round_cents(lines.iter().map(|l| l.amount).sum()),
        lines,
    })
}

fn round_cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl Accounts {
    /// The accounts as CSV: a header, one row per line, no total row (a spreadsheet sums).
    pub fn to_csv(&self) -> String {
        let mut out =
            String::from("month,reader,home,reads,price_per_read,amount,currency,agreement\n");
        for l in &self.lines {
            out.push_str(&format!(
                "{},{},{},{},{:.2},{:.2},{},{}\n",
                self.month,
                l.reader,
                l.home,
                l.reads,
                l.price_per_read,
                l.amount,
                self.currency,
                l.agreement
            ));
        }
        out
    }
}
