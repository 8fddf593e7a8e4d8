//! The request-body stream under STOW-RS's multipart parser, with its bounds.
//!
//! multer parses `multipart/related` bodies (RFC 2046 §5.1) well, but it buffers
//! everything until it finds the first boundary, and everything until a part's header
//! block ends, rescanning the buffer each time a chunk arrives: a body without its
//! boundary was held whole and parsed in time quadratic in its size. [`Framing`]
//! follows the same delimiters in one linear pass over the chunks, before multer sees
//! them, and fails the stream once a preamble or header block passes its bound. The
//! stream also counts the whole body and turns a stalled client into a clear error.

use std::time::{Duration, Instant};

use bytes::Bytes;

/// Why the request body stopped.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds {0} bytes (limits.max_request_bytes)")]
    TooLarge(u64),
    #[error("{0}")]
    Framing(String),
    #[error("the client sent nothing for {0:?} (limits.body_idle_timeout_secs)")]
    IdleTimeout(Duration),
    /// Too slow on average, or longer than the request deadline.
    #[error("{0}")]
    TooSlow(String),
    #[error("reading the request body failed: {0}")]
    Transport(String),
}

impl BodyError {
    /// Classifies an error of the body stream: the idle timeout of
    /// `tower_http::timeout::RequestBodyTimeoutLayer` or a transport failure.
    pub fn from_body(e: axum::Error, idle: Duration) -> BodyError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if s.is::<tower_http::timeout::TimeoutError>() {
                return BodyError::IdleTimeout(idle);
            }
            source = s.source();
        }
        let inner = e.into_inner();
        if inner.is::<tower_http::timeout::TimeoutError>() {
            return BodyError::IdleTimeout(idle);
        }
        BodyError::Transport(inner.to_string())
    }

    /// Finds our error inside one of multer's.
    pub fn in_multer(e: &multer::Error) -> Option<&BodyError> {
        match e {
            multer::Error::StreamReadFailed(inner) => inner.downcast_ref::<BodyError>(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before the first `--boundary`.
    Preamble,
    /// Just after a delimiter: `--` closes the body, anything else starts a part.
    AfterDelimiter,
    /// Transport padding (spaces, tabs) after a delimiter, then the CRLF that ends
    /// the delimiter line (RFC 2046 §5.1.1), which multer requires and skips.
    Padding,
    /// A part's header block, up to the empty line.
    Headers,
    /// A part's content, up to the next `\r\n--boundary`.
    Content,
    /// After the close delimiter: multer reads no further.
    Done,
}

/// Tracks multipart delimiters across chunks and bounds the preamble and each
/// part's header block.
pub struct Framing {
    first: Vec<u8>,
    delimiter: Vec<u8>,
    stage: Stage,
    /// Bytes seen in the current preamble or header block.
    seen: usize,
    max: usize,
    /// The tail of the last chunk, where a delimiter may begin.
    carry: Vec<u8>,
    received: u64,
    max_body: u64,
    pace: Pace,
}

/// How fast a body must arrive: after `grace`, at least `min_rate` bytes per second
/// on average, and all of it within `deadline`.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub started: Instant,
    pub grace: Duration,
    pub min_rate: u64,
    pub deadline: Duration,
}

impl Pace {
    /// No pace bound (tests of the framing alone).
    pub fn unbounded() -> Pace {
        Pace {
            started: Instant::now(),
            grace: Duration::MAX,
            min_rate: 0,
            deadline: Duration::MAX,
        }
    }

    fn check(&self, received: u64, now: Instant) -> Result<(), BodyError> {
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed > self.deadline {
            return Err(BodyError::TooSlow(format!(
                "the upload took longer than {} s (limits.max_upload_secs)",
                self.deadline.as_secs()
            )));
        }
        if let Some(late) = elapsed.checked_sub(self.grace) {
            let needed = (self.min_rate as f64 * late.as_secs_f64()) as u64;
            if received < needed {
                return Err(BodyError::TooSlow(format!(
                    "the client sent {received} bytes in {} s, slower than {} bytes/s on average (limits.min_upload_bytes_per_sec)",
                    elapsed.as_secs(),
                    self.min_rate
                )));
            }
        }
        Ok(())
    }
}

impl Framing {
    pub fn new(boundary: &str, max_header_bytes: usize, max_body: u64, pace: Pace) -> Framing {
        Framing {
            first: format!("--{boundary}").into_bytes(),
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            stage: Stage::Preamble,
            seen: 0,
            max: max_header_bytes,
            carry: Vec::new(),
            received: 0,
            max_body,
            pace,
        }
    }

    /// Follows one chunk; an error ends the body.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), BodyError> {
        self.feed_at(chunk, Instant::now())
    }

    /// [`Framing::feed`] of a chunk that arrived at `now`.
    pub fn feed_at(&mut self, chunk: &[u8], now: Instant) -> Result<(), BodyError> {
        self.received += chunk.len() as u64;
        if self.received > self.max_body {
            return Err(BodyError::TooLarge(self.max_body));
        }
        self.pace.check(self.received, now)?;
        if self.stage == Stage::Done {
            return Ok(());
        }
        let mut window = std::mem::take(&mut self.carry);
        window.extend_from_slice(chunk);
        let mut at = 0;
        loop {
            let pattern: &[u8] = match self.stage {
                Stage::Preamble => &self.first,
                Stage::Headers => b"\r\n\r\n",
                Stage::Content => &self.delimiter,
                Stage::Done => return Ok(()),
                Stage::AfterDelimiter => {
                    if window.len() - at < 2 {
                        self.carry = window[at..].to_vec();
                        return Ok(());
                    }
                    self.stage = if &window[at..at + 2] == b"--" {
                        Stage::Done
                    } else {
                        Stage::Padding
                    };
                    continue;
                }
                Stage::Padding => {
                    // As multer does: skip the padding, then the delimiter line's CRLF;
                    // its search for the header block's end starts after that CRLF, so
                    // `--B\r\n\r\n` is not an empty header block to it (nor to us).
                    let padding = window[at..]
                        .iter()
                        .take_while(|b| matches!(b, b' ' | b'\t'))
                        .count();
                    self.seen += padding;
                    self.check(self.seen)?;
                    at += padding;
                    if window.len() - at < 2 {
                        self.carry = window[at..].to_vec();
                        return Ok(());
                    }
                    if &window[at..at + 2] != b"\r\n" {
                        return Err(BodyError::Framing(
                            "a multipart delimiter line does not end with CRLF (RFC 2046 §5.1.1)"
                                .into(),
                        ));
                    }
                    at += 2;
                    self.stage = Stage::Headers;
                    continue;
                }
            };
            let bounded = matches!(self.stage, Stage::Preamble | Stage::Headers);
            match memchr::memmem::find(&window[at..], pattern) {
                Some(i) => {
                    if bounded {
                        self.check(self.seen + i)?;
                    }
                    self.seen = 0;
                    self.stage = match self.stage {
                        Stage::Headers => Stage::Content,
                        _ => Stage::AfterDelimiter,
                    };
                    at += i + pattern.len();
                }
                None => {
                    let rest = window.len() - at;
                    let keep = rest.min(pattern.len() - 1);
                    if bounded {
                        self.seen += rest - keep;
                        self.check(self.seen + keep)?;
                    }
                    self.carry = window[window.len() - keep..].to_vec();
                    return Ok(());
                }
            }
        }
    }

    fn check(&self, n: usize) -> Result<(), BodyError> {
        if n <= self.max {
            return Ok(());
        }
        Err(BodyError::Framing(match self.stage {
            Stage::Preamble => format!(
                "no multipart boundary `{}` within the first {} bytes of the body (wrong boundary, or not a multipart body)",
                String::from_utf8_lossy(&self.first).chars().take(80).collect::<String>(),
                self.max
            ),
            _ => format!(
                "a part's header block runs past {} bytes without its ending empty line",
                self.max
            ),
        }))
    }
}

/// Wraps a request body into the stream multer reads: counted, framed, and with
/// stalls and transport failures named.
pub fn framed_body(
    body: axum::body::Body,
    boundary: &str,
    limits: &crate::config::Limits,
) -> impl futures_util::Stream<Item = Result<Bytes, BodyError>> + Send + 'static {
    use futures_util::StreamExt;
    let idle = Duration::from_secs(limits.body_idle_timeout_secs);
    let pace = Pace {
        started: Instant::now(),
        grace: idle,
        min_rate: limits.min_upload_bytes_per_sec,
        deadline: Duration::from_secs(limits.max_upload_secs),
    };
    let mut framing = Framing::new(
        boundary,
        limits.max_multipart_header_bytes,
        limits.max_request_bytes,
        pace,
    );
    body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(|e| BodyError::from_body(e, idle))?;
        framing.feed(&chunk)?;
        Ok(chunk)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]], max: usize) -> Result<Stage, String> {
        let mut f = Framing::new("b0undary", max, u64::MAX, Pace::unbounded());
        for c in chunks {
            f.feed(c).map_err(|e| e.to_string())?;
        }
        Ok(f.stage)
    }

    #[test]
    fn a_well_formed_body_passes_in_any_chunking() {
        let body = b"preamble\r\n--b0undary\r\nContent-Type: application/dicom\r\n\r\nDATA--b0und\r\n--b0undary\r\nContent-Type: application/dicom\r\n\r\nMORE\r\n--b0undary--\r\nepilogue";
        for size in [1, 2, 3, 7, 16, body.len()] {
            let chunks: Vec<&[u8]> = body.chunks(size).collect();
            assert_eq!(run(&chunks, 64), Ok(Stage::Done), "chunk size {size}");
        }
    }

    #[test]
    fn a_body_without_its_boundary_fails_at_the_bound() {
        let zeros = vec![0u8; 1 << 20];
        let e = run(&[&zeros], 4096).unwrap_err();
        assert!(
            e.contains("no multipart boundary `--b0undary` within the first 4096 bytes"),
            "{e}"
        );
        // large content is fine; only preambles and header blocks are bounded
        let mut ok = b"--b0undary\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
        ok.extend_from_slice(&zeros);
        assert_eq!(run(&[&ok], 4096), Ok(Stage::Content));
    }

    #[test]
    fn a_header_block_that_never_ends_fails_at_the_bound() {
        let mut body = b"--b0undary\r\nContent-Type: application/dicom\r\nX: ".to_vec();
        body.extend(std::iter::repeat_n(b'a', 10_000));
        let e = run(&[&body], 4096).unwrap_err();
        assert!(e.contains("header block runs past 4096 bytes"), "{e}");
    }

    /// Review finding: the framing took `--B\r\n\r\n` as an empty header block, while
    /// multer skips the delimiter line's CRLF and keeps searching for the block's end,
    /// buffering without bound.
    #[test]
    fn an_empty_line_after_the_delimiter_is_not_an_empty_header_block() {
        let mut body = b"--b0undary  \t\r\n\r\n".to_vec();
        body.extend(std::iter::repeat_n(b'a', 10_000));
        for size in [1, 5, body.len()] {
            let chunks: Vec<&[u8]> = body.chunks(size).collect();
            let e = run(&chunks, 4096).unwrap_err();
            assert!(e.contains("header block runs past 4096 bytes"), "{e}");
        }
        // padding counts against the bound too
        let mut padded = b"--b0undary".to_vec();
        padded.extend(std::iter::repeat_n(b' ', 10_000));
        let e = run(&[&padded], 4096).unwrap_err();
        assert!(e.contains("header block runs past 4096 bytes"), "{e}");
        // a delimiter line with something else before its CRLF is refused
        let e = run(&[b"--b0undaryX\r\n\r\n"], 4096).unwrap_err();
        assert!(e.contains("does not end with CRLF"), "{e}");
    }

    /// Review finding: a client trickling a byte now and then (inside the idle
    /// timeout) held its upload slot for as long as it liked.
    #[test]
    fn a_trickling_or_endless_body_is_cut_off() {
        let t0 = Instant::now();
        let pace = Pace {
            started: t0,
            grace: Duration::from_secs(60),
            min_rate: 1000,
            deadline: Duration::from_secs(3600),
        };
        let mut f = Framing::new("b", 1024, u64::MAX, pace);
        // within the grace period anything goes
        f.feed_at(b"--b\r\nX: y\r\n\r\n", t0 + Duration::from_secs(59))
            .unwrap();
        // 100 s in: 40 s past the grace needs 40,000 bytes
        f.feed_at(&[b'x'; 41_000], t0 + Duration::from_secs(100))
            .unwrap();
        // 102 s in, 42,000 needed
        let e = f
            .feed_at(b"x", t0 + Duration::from_secs(102))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "the client sent 41014 bytes in 102 s, slower than 1000 bytes/s on average (limits.min_upload_bytes_per_sec)");
        // a fast client still meets the deadline
        let mut f = Framing::new("b", 1024, u64::MAX, pace);
        f.feed_at(&vec![b'x'; 4 << 20], t0 + Duration::from_secs(3600))
            .unwrap_err();
        let mut f = Framing::new("b", 1024, u64::MAX, pace);
        let e = f
            .feed_at(b"--b", t0 + Duration::from_secs(3601))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "the upload took longer than 3600 s (limits.max_upload_secs)"
        );
    }

    #[test]
    fn the_whole_body_is_counted() {
        let mut f = Framing::new("b", 1024, 10, Pace::unbounded());
        f.feed(b"--b\r\n\r\n").unwrap();
        let e = f.feed(b"0123").unwrap_err().to_string();
        assert_eq!(
            e,
            "request body exceeds 10 bytes (limits.max_request_bytes)"
        );
    }
}
