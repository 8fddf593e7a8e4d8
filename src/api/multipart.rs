//! The request-body stream under STOW-RS's multipart parser, with its bounds.
//!
//! multer parses `multipart/related` bodies (RFC 2046 §5.1) well, but it buffers
//! everything until it finds the first boundary, and everything until a part's header
//! block ends, rescanning the buffer each time a chunk arrives: a body without its
//! boundary was held whole and parsed in time quadratic in its size. [`Framing`]
//! follows the same delimiters in one linear pass over the chunks, before multer sees
//! them, and fails the stream once a preamble or header block passes its bound. The
//! stream also counts the whole body and turns a stalled client into a clear error.

use std::time::Duration;

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
}

impl Framing {
    pub fn new(boundary: &str, max_header_bytes: usize, max_body: u64) -> Framing {
        Framing {
            first: format!("--{boundary}").into_bytes(),
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            stage: Stage::Preamble,
            seen: 0,
            max: max_header_bytes,
            carry: Vec::new(),
            received: 0,
            max_body,
        }
    }

    /// Follows one chunk; an error ends the body.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), BodyError> {
        self.received += chunk.len() as u64;
        if self.received > self.max_body {
            return Err(BodyError::TooLarge(self.max_body));
        }
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
                        // The header block begins with the delimiter line's CRLF, so
                        // an empty block is found at once.
                        Stage::Headers
                    };
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
    max_header_bytes: usize,
    max_body: u64,
    idle: Duration,
) -> impl futures_util::Stream<Item = Result<Bytes, BodyError>> + Send + 'static {
    use futures_util::StreamExt;
    let mut framing = Framing::new(boundary, max_header_bytes, max_body);
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
        let mut f = Framing::new("b0undary", max, u64::MAX);
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
        let mut ok = b"--b0undary\r\n\r\n".to_vec();
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

    #[test]
    fn the_whole_body_is_counted() {
        let mut f = Framing::new("b", 1024, 10);
        f.feed(b"--b\r\n\r\n").unwrap();
        let e = f.feed(b"0123").unwrap_err().to_string();
        assert_eq!(
            e,
            "request body exceeds 10 bytes (limits.max_request_bytes)"
        );
    }
}
