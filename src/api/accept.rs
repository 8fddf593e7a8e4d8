//! The `Accept` header as media ranges (RFC 9110 §12.5.1), for the DICOMweb routes
//! that negotiate what they answer with.

use axum::http::{header, HeaderMap};

/// One media range: its type in lower case, its parameters (values unquoted), and
/// whether it was given `q=0` ("not acceptable").
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRange {
    pub media: String,
    pub params: Vec<(String, String)>,
    pub refused: bool,
}

impl MediaRange {
    /// The value of parameter `name` (case-insensitive name).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The request's `Accept` ranges, and its value as sent (cut to 200 characters, for
/// a 406 message); `None` without an `Accept` header (anything is acceptable).
pub fn ranges(headers: &HeaderMap) -> Option<(Vec<MediaRange>, String)> {
    let values: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if values.is_empty() {
        return None;
    }
    let joined = values.join(", ");
    let ranges = split_ranges(&joined)
        .into_iter()
        .map(|range| {
            let mut fields = range.split(';').map(str::trim);
            let media = fields.next().unwrap_or("").to_ascii_lowercase();
            let mut params = Vec::new();
            let mut refused = false;
            for f in fields {
                let Some((k, v)) = f.split_once('=') else {
                    continue;
                };
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().trim_matches('"'));
                if k == "q" {
                    refused = v.parse::<f32>().is_ok_and(|q| q <= 0.0);
                } else {
                    params.push((k, v.to_owned()));
                }
            }
            MediaRange {
                media,
                params,
                refused,
            }
        })
        .collect();
    Some((ranges, joined.chars().take(200).collect()))
}

/// Splits an Accept value at the commas between ranges, not those inside quotes.
fn split_ranges(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out.retain(|r| !r.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn ranges_keep_quoted_commas_and_read_q() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static(r#"multipart/related; type="a,b"; q=0, */*;q=0.5"#),
        );
        let (r, text) = ranges(&h).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].media, "multipart/related");
        assert_eq!(r[0].param("TYPE"), Some("a,b"));
        assert!(r[0].refused);
        assert_eq!(r[1].media, "*/*");
        assert!(!r[1].refused);
        assert_eq!(text, r#"multipart/related; type="a,b"; q=0, */*;q=0.5"#);
        assert!(ranges(&HeaderMap::new()).is_none());
    }
}
