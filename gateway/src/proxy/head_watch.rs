//! Watches the request bytes hyper reads, for the one framing ambiguity hyper hides: a request
//! with both `Content-Length` and `Transfer-Encoding` (CL.TE, TE.CL smuggling).
//!
//! hyper follows the chunked coding of such a request, as RFC 9112 §6.3 allows, and removes
//! `Content-Length` before the gateway sees the request, so the service cannot tell it from a
//! plain chunked upload. The RFC also says such a message "ought to be handled as an error"
//! (nginx answers 400), and it is what a smuggling attempt looks like. So the connection's
//! bytes pass through a small framing tracker on their way to hyper: it finds each request head,
//! notes whether it has both headers, and skips the body by its framing (length, or chunks) to
//! the next head. The gateway refuses a request whose connection was marked.
//!
//! The tracker never decides alone: hyper still parses and refuses malformed framing itself, and
//! closes the connection after such a 400. Where the tracker cannot follow (a length or chunk
//! size it cannot read, a head over the cap), hyper refuses the request anyway, and the tracker
//! stops for the rest of the connection rather than guess, so it never marks a legitimate
//! request. It scans only for the two headers instead of parsing heads: hyper parses them.
use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Where the tracker is in the byte stream.
#[derive(Debug)]
enum State {
    /// Reading a request head (bytes of it so far).
    Head(Vec<u8>),
    /// Skipping this many more bytes of body: a length's, or a chunk's data.
    Skip(u64, After),
    /// Reading a line of a chunked body (bytes of it so far).
    Line(LineOf, Vec<u8>),
    /// The CRLF after chunk data (`\r` seen: true).
    ChunkEnd(bool),
    /// Stopped following: hyper refuses what the tracker could not read.
    Lost,
}

/// What follows skipped bytes.
#[derive(Clone, Copy, Debug)]
enum After {
    /// The next request head (after a body with a length).
    Head,
    /// The CRLF that ends chunk data.
    ChunkEnd,
}

/// Which line of a chunked body.
#[derive(Clone, Copy, Debug)]
enum LineOf {
    ChunkSize,
    /// A trailer line after the last chunk; an empty one ends the body.
    Trailer,
}

/// The framing tracker of one connection: a pure state machine over the bytes read.
#[derive(Debug)]
pub struct Tracker {
    state: State,
    /// Largest head it buffers (the gateway's header cap).
    max_head: usize,
    /// A head with both `Content-Length` and `Transfer-Encoding` was seen.
    both_lengths: bool,
}

impl Tracker {
    pub fn new(max_head: usize) -> Self {
        Self {
            state: State::Head(Vec::new()),
            max_head,
            both_lengths: false,
        }
    }

    /// Whether a head with both lengths has been seen on this connection.
    pub fn both_lengths(&self) -> bool {
        self.both_lengths
    }

    /// Follows `bytes`, the next ones the connection read.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let used = self.step(bytes);
            bytes = &bytes[used..];
        }
    }

    /// Consumes a prefix of `bytes` (at least one byte unless lost); returns its length.
    fn step(&mut self, bytes: &[u8]) -> usize {
        match &mut self.state {
            State::Lost => bytes.len(),
            State::Head(head) => {
                // Blank lines before a request are ignored (RFC 9112 §2.2), as hyper does.
                if head.is_empty() && (bytes[0] == b'\r' || bytes[0] == b'\n') {
                    return 1;
                }
                // The usual case, a whole head in one read, is scanned in place.
                if head.is_empty()
                    && let Some((end, te, cl)) = scan_head(bytes)
                {
                    self.state = if end > self.max_head {
                        State::Lost
                    } else {
                        self.after_head(te, cl)
                    };
                    return end;
                }
                let before = head.len();
                head.extend_from_slice(bytes);
                let Some(end) = head_end(head, before) else {
                    if head.len() > self.max_head {
                        self.state = State::Lost;
                    }
                    return bytes.len();
                };
                let head = std::mem::take(head);
                self.state = match scan_head(&head[..end]) {
                    Some((end, te, cl)) if end <= self.max_head => self.after_head(te, cl),
                    _ => State::Lost,
                };
                end - before
            }
            State::Skip(left, after) => {
                let n = (*left).min(bytes.len() as u64);
                *left -= n;
                if *left == 0 {
                    self.state = match after {
                        After::Head => State::Head(Vec::new()),
                        After::ChunkEnd => State::ChunkEnd(false),
                    };
                }
                // `n` fits in usize: it is at most `bytes.len()`.
                n as usize
            }
            State::Line(of, line) => {
                let nl = memchr::memchr(b'\n', bytes);
                line.extend_from_slice(&bytes[..nl.unwrap_or(bytes.len())]);
                let Some(nl) = nl else {
                    if line.len() > self.max_head {
                        self.state = State::Lost;
                    }
                    return bytes.len();
                };
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                self.state = match of {
                    LineOf::ChunkSize => match chunk_size(line) {
                        Some(0) => State::Line(LineOf::Trailer, Vec::new()),
                        Some(n) => State::Skip(n, After::ChunkEnd),
                        None => State::Lost,
                    },
                    LineOf::Trailer if line.is_empty() => State::Head(Vec::new()),
                    LineOf::Trailer => State::Line(LineOf::Trailer, Vec::new()),
                };
                nl + 1
            }
            State::ChunkEnd(cr) => {
                self.state = match (bytes[0], *cr) {
                    (b'\r', false) => State::ChunkEnd(true),
                    (b'\n', true) => State::Line(LineOf::ChunkSize, Vec::new()),
                    _ => State::Lost,
                };
                1
            }
        }
    }

    /// Notes both lengths, and returns the state for the head's body (`Lost` when its length
    /// cannot be read: hyper refuses it).
    fn after_head(&mut self, te: bool, cl: Option<Option<u64>>) -> State {
        if te && cl.is_some() {
            self.both_lengths = true;
        }
        // A CONNECT or an upgrade is refused or ignored by the gateway: hyper reads on as HTTP.
        match (te, cl) {
            (true, _) => State::Line(LineOf::ChunkSize, Vec::new()),
            (false, Some(Some(0)) | None) => State::Head(Vec::new()),
            (false, Some(Some(n))) => State::Skip(n, After::Head),
            // An unreadable length: hyper answers 400.
            (false, Some(None)) => State::Lost,
        }
    }
}

/// One pass over `buf`, which starts with a request line: if it holds a whole head, the head's
/// length (through its blank line), whether it has `Transfer-Encoding`, and its
/// `Content-Length` (`Some(None)`: present but not one number).
///
/// Only these two headers matter here, so the head is scanned line by line rather than parsed:
/// a head hyper refuses for any other reason gets a 400 and its connection is closed, whatever
/// this says. Lines end at LF, with or without CR (hyper accepts both).
fn scan_head(buf: &[u8]) -> Option<(usize, bool, Option<Option<u64>>)> {
    let (mut te, mut cl) = (false, None);
    let mut start = 0;
    let mut request_line = true;
    while let Some(nl) = memchr::memchr(b'\n', &buf[start..]) {
        let line = &buf[start..start + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        start += nl + 1;
        if std::mem::take(&mut request_line) {
            continue;
        }
        // Most lines are neither: one byte rules them out.
        match line.first().map(|b| b | 0x20) {
            None => return Some((start, te, cl)),
            Some(b't') if strip_name(line, b"transfer-encoding").is_some() => te = true,
            Some(b'c') => {
                if let Some(value) = strip_name(line, b"content-length") {
                    cl = Some(
                        std::str::from_utf8(value)
                            .ok()
                            .and_then(|v| v.trim_matches([' ', '\t']).parse::<u64>().ok()),
                    );
                }
            }
            _ => {}
        }
    }
    None
}

/// The value of `line` if it is the header `name` (lowercase), as `Name: value`.
fn strip_name<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let (head, rest) = line.split_at_checked(name.len())?;
    (head.eq_ignore_ascii_case(name) && rest.first() == Some(&b':')).then(|| &rest[1..])
}

/// The length of a complete head in `buf` (through its blank line), if it is complete. Only the
/// bytes from `from` on are new: the search starts just before them, so feeding a head a byte at
/// a time costs linear time, not quadratic.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    // A line ends at LF (a bare LF is accepted by hyper too); the head at an empty line.
    (from.saturating_sub(2)..buf.len()).find_map(|i| {
        let blank = buf[i] == b'\n'
            && i > 0
            && (buf[i - 1] == b'\n' || (buf[i - 1] == b'\r' && i > 1 && buf[i - 2] == b'\n'));
        blank.then_some(i + 1)
    })
}

/// The size of a chunk-size line (`1a;ext=x\r`), extensions ignored.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let hex = line.split(|&b| b == b';').next()?;
    let hex = std::str::from_utf8(hex).ok()?.trim_end_matches([' ', '\t']);
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// What a connection's watcher found, shared with the requests it carries.
#[derive(Debug, Default)]
pub struct Marks(AtomicBool);

impl Marks {
    /// Whether a request head on this connection carried both lengths.
    pub fn both_lengths(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A client connection whose bytes go through a [`Tracker`] on their way to hyper.
pub struct Watched<S> {
    inner: S,
    tracker: Tracker,
    marks: Arc<Marks>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, max_head: usize) -> (Self, Arc<Marks>) {
        let marks = Arc::new(Marks::default());
        let watched = Self {
            inner,
            tracker: Tracker::new(max_head),
            marks: marks.clone(),
        };
        (watched, marks)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let this = &mut *self;
            this.tracker.feed(&buf.filled()[before..]);
            if this.tracker.both_lengths() {
                this.marks.0.store(true, Ordering::Relaxed);
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` in pieces of `split` bytes; whether both lengths were seen, and whether
    /// the tracker still follows (is not lost).
    fn track(stream: &[u8], split: usize) -> (bool, bool) {
        let mut t = Tracker::new(16 * 1024);
        for piece in stream.chunks(split.max(1)) {
            t.feed(piece);
        }
        (t.both_lengths(), !matches!(t.state, State::Lost))
    }

    const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

    #[test]
    fn tracker_table() {
        let chunked_ping = format!("{:x}\r\n{PING}\r\n0\r\n\r\n", PING.len());
        let smuggled = "GET /x HTTP/1.1\r\nHost: evil\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let cases: Vec<(&str, String, bool, bool)> = vec![
            // (what, bytes, both lengths seen, still following)
            (
                "one POST with a length",
                format!("POST /mcp HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{PING}", PING.len()),
                false,
                true,
            ),
            (
                "CL.TE",
                format!("POST /mcp HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_ping}"),
                true,
                true,
            ),
            (
                "TE.CL, any case",
                format!("POST /mcp HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 4\r\n\r\n{chunked_ping}"),
                true,
                true,
            ),
            (
                "a plain chunked upload",
                format!("PUT /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_ping}"),
                false,
                true,
            ),
            (
                "keep-alive: a clean request, then one with both lengths",
                format!(
                    "POST /mcp HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{PING}{smuggled}",
                    PING.len()
                ),
                true,
                true,
            ),
            (
                "a body that looks like a smuggled head is skipped by its length",
                format!(
                    "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{smuggled}GET / HTTP/1.1\r\nHost: a\r\n\r\n",
                    smuggled.len()
                ),
                false,
                true,
            ),
            (
                "a chunk that looks like a smuggled head is skipped by its size",
                format!(
                    "PUT /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{:x};ext=1\r\n{smuggled}\r\n0\r\nX-Trailer: t\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
                    smuggled.len()
                ),
                false,
                true,
            ),
            (
                "bare LF line ends",
                "GET / HTTP/1.1\nHost: a\n\nPOST / HTTP/1.1\nHost: a\nContent-Length: 1\nTransfer-Encoding: chunked\n\n0\n\n".to_owned(),
                true,
                true,
            ),
            (
                "blank lines between requests",
                "GET / HTTP/1.1\r\nHost: a\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n".to_owned(),
                false,
                true,
            ),
            (
                // hyper answers such a head 400 and closes: what follows is never served.
                "a head hyper refuses for another reason is still followed",
                "GET / HTTP/1.1\r\nHo st: a\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned(),
                true,
                true,
            ),
            (
                "a name with a space before its colon is not the header (hyper refuses it)",
                "POST / HTTP/1.1\r\nContent-Length : 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_owned(),
                false,
                true,
            ),
            (
                "an unreadable chunk size: stop following",
                "PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n".to_owned(),
                false,
                false,
            ),
            (
                "an unreadable length: stop following",
                "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\nab".to_owned(),
                false,
                false,
            ),
            (
                "a head over the cap: stop following",
                format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20 * 1024)),
                false,
                false,
            ),
        ];
        for (what, bytes, both, following) in &cases {
            // Whole, byte by byte, and in odd pieces: reads split anywhere.
            for split in [bytes.len(), 1, 7] {
                assert_eq!(
                    track(bytes.as_bytes(), split),
                    (*both, *following),
                    "{what}, pieces of {split}"
                );
            }
        }
    }

    #[test]
    fn chunk_sizes() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"0\r", Some(0)),
            (b"1a\r", Some(26)),
            (b"1A;name=value\r", Some(26)),
            (b"ff \r", Some(255)),
            (b"\r", None),
            (b"zz\r", None),
            (b"-1\r", None),
            (b"0x10\r", None),
            (b"fffffffffffffffffff\r", None),
        ];
        for (line, want) in cases {
            assert_eq!(
                chunk_size(line),
                *want,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
