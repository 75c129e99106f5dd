//! Server-Sent Events, incrementally: the stream is cut into whole events (each ends with a
//! blank line; lines end with CRLF, LF or CR) as bytes arrive, so an event can be inspected and
//! passed on the moment it is complete, and never before. Bytes are kept only until their
//! event ends.
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, header};

/// Whether a message with these headers is an SSE stream: its media type is
/// `text/event-stream`, in any case (media types are case-insensitive), with any parameters.
/// The one test every layer uses, so an answer is treated as a stream everywhere or nowhere.
pub fn is_event_stream(headers: &HeaderMap) -> bool {
    const SSE: &[u8] = b"text/event-stream";
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes().trim_ascii_start();
        v.len() >= SSE.len()
            && v[..SSE.len()].eq_ignore_ascii_case(SSE)
            && matches!(v.get(SSE.len()), None | Some(b';' | b' ' | b'\t'))
    })
}

/// Cuts a byte stream into events.
#[derive(Debug)]
pub struct Splitter {
    buf: BytesMut,
    /// Scan position in `buf`.
    at: usize,
    /// Where the current line starts in `buf`.
    line_start: usize,
    /// Most bytes one event may take.
    max: usize,
}

/// An event longer than the splitter's limit.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLong;

impl Splitter {
    pub fn new(max: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            at: 0,
            line_start: 0,
            max,
        }
    }

    /// Adds `data`; returns the events it completed, each with its terminating blank line.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Bytes>, TooLong> {
        self.buf.extend_from_slice(data);
        let mut events = Vec::new();
        while self.at < self.buf.len() {
            let (end, blank) = match self.buf[self.at] {
                b'\n' => (self.at + 1, self.at == self.line_start),
                b'\r' => {
                    // CR LF is one line end: wait for the next byte to know which.
                    let Some(next) = self.buf.get(self.at + 1) else {
                        break;
                    };
                    let end = if *next == b'\n' {
                        self.at + 2
                    } else {
                        self.at + 1
                    };
                    (end, self.at == self.line_start)
                }
                _ => {
                    self.at += 1;
                    continue;
                }
            };
            self.at = end;
            self.line_start = end;
            if blank {
                events.push(self.buf.split_to(end).freeze());
                self.at = 0;
                self.line_start = 0;
            }
        }
        if self.buf.len() > self.max {
            return Err(TooLong);
        }
        Ok(events)
    }

    /// Whether no partial event is held (the stream is between events).
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// What is left at the end of the stream (an event without its blank line), if anything.
    pub fn finish(&mut self) -> Option<Bytes> {
        self.at = 0;
        self.line_start = 0;
        (!self.buf.is_empty()).then(|| self.buf.split().freeze())
    }
}

/// The fields of one event the gateway reads.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field (the last one wins, as in browsers).
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// Whether any `data:` line was present.
    pub has_data: bool,
}

/// The lines of `raw`, without their ends.
fn lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = raw;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest.iter().position(|b| *b == b'\n' || *b == b'\r');
        let (line, after) = match end {
            None => (rest, &rest[rest.len()..]),
            Some(i) if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') => {
                (&rest[..i], &rest[i + 2..])
            }
            Some(i) => (&rest[..i], &rest[i + 1..]),
        };
        rest = after;
        Some(line)
    })
}

/// `(field, value)` of a line: the value after `:` and one optional space.
fn field(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|b| *b == b':') {
        Some(i) => {
            let value = &line[i + 1..];
            (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
        }
        None => (line, b""),
    }
}

/// Reads an event's `event` and `data` fields (comments and other fields are ignored).
pub fn parse(raw: &[u8]) -> Event {
    let mut out = Event::default();
    for line in lines(raw) {
        match field(line) {
            (b"event", v) => out.event = Some(String::from_utf8_lossy(v).into_owned()),
            (b"data", v) => {
                if out.has_data {
                    out.data.push('\n');
                }
                out.data.push_str(&String::from_utf8_lossy(v));
                out.has_data = true;
            }
            _ => {}
        }
    }
    out
}

/// `raw` with its `data:` lines replaced by one `data: {data}` line where the first one was
/// (every other line kept as it was), ending with the blank line. `data` must hold no line
/// break (compact JSON holds none).
pub fn with_data(raw: &[u8], data: &str) -> Bytes {
    let mut out = Vec::with_capacity(raw.len().max(data.len() + 8));
    let mut written = false;
    for line in lines(raw) {
        if line.is_empty() {
            continue;
        }
        if field(line).0 == b"data" {
            if !written {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(data.as_bytes());
                out.push(b'\n');
                written = true;
            }
            continue;
        }
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_streams_are_recognised_in_any_case() {
        let cases: [(Option<&str>, bool); 9] = [
            (Some("text/event-stream"), true),
            (Some("Text/Event-Stream"), true),
            (Some("TEXT/EVENT-STREAM; charset=utf-8"), true),
            (Some("  text/event-stream"), true),
            (Some("text/event-stream;x=1"), true),
            (Some("text/event-streamx"), false),
            (Some("application/json"), false),
            (Some("text/event"), false),
            (None, false),
        ];
        for (value, want) in cases {
            let mut headers = HeaderMap::new();
            if let Some(v) = value {
                headers.insert(header::CONTENT_TYPE, v.parse().unwrap());
            }
            assert_eq!(is_event_stream(&headers), want, "{value:?}");
        }
    }

    fn all(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut s = Splitter::new(1 << 20);
        let mut out: Vec<Vec<u8>> = chunks
            .iter()
            .flat_map(|c| s.push(c).expect("fits"))
            .map(|b| b.to_vec())
            .collect();
        out.extend(s.finish().map(|b| b.to_vec()));
        out
    }

    #[test]
    fn events_end_at_a_blank_line_whatever_the_line_ends() {
        type Row<'a> = (&'a [&'a [u8]], &'a [&'a [u8]]);
        #[rustfmt::skip]
        let rows: &[Row] = &[
            (&[b"data: a\n\ndata: b\n\n"], &[b"data: a\n\n", b"data: b\n\n"]),
            (&[b"data: a\r\n\r\ndata: b\r\r"], &[b"data: a\r\n\r\n", b"data: b\r\r"]),
            (&[b"id: 1\nevent: message\ndata: x\n\n"], &[b"id: 1\nevent: message\ndata: x\n\n"]),
            // Split anywhere, including between CR and LF.
            (&[b"data: a\r", b"\n", b"\r", b"\ndata: b\n", b"\n"], &[b"data: a\r\n\r\n", b"data: b\n\n"]),
            (&[b"da", b"ta: a\n", b"\n"], &[b"data: a\n\n"]),
            // CR LF ends one line, not two: no blank line, one event.
            (&[b"data: a\r\ndata: b\n\n"], &[b"data: a\r\ndata: b\n\n"]),
            // Comments and keep-alives are events of their own.
            (&[b":\n\n:ping\n\n"], &[b":\n\n", b":ping\n\n"]),
            // What is left at the end comes out as is.
            (&[b"data: a\n\ndata: unterminated"], &[b"data: a\n\n", b"data: unterminated"]),
            (&[b"data: a\r"], &[b"data: a\r"]),
        ];
        for (chunks, want) in rows {
            let want: Vec<Vec<u8>> = want.iter().map(|w| w.to_vec()).collect();
            assert_eq!(all(chunks), want, "{chunks:?}");
        }
    }

    #[test]
    fn an_event_over_the_limit_is_an_error() {
        let mut s = Splitter::new(8);
        assert_eq!(
            s.push(b"data: 12\n\n")
                .expect("whole event leaves nothing")
                .len(),
            1
        );
        assert_eq!(s.push(b"data: 123456789"), Err(TooLong));
    }

    #[test]
    fn fields_are_read_as_browsers_do() {
        let e = parse(b"id: 7\nevent: endpoint\ndata: /messages/?session_id=1\n\n");
        assert_eq!(e.event.as_deref(), Some("endpoint"));
        assert_eq!(e.data, "/messages/?session_id=1");
        let e = parse(b"data:a\ndata:  b\n: comment\ndata\n\n");
        assert_eq!(
            e.data, "a\n b\n",
            "one optional space is removed; `data` alone is empty"
        );
        assert!(parse(b": only a comment\n\n").data.is_empty());
        assert!(!parse(b"id: 1\n\n").has_data);
    }

    #[test]
    fn data_is_replaced_in_place() {
        let out = with_data(
            b"id: 3\r\nevent: message\r\ndata: {\"a\":\r\ndata: 1}\r\nretry: 5\r\n\r\n",
            "{}",
        );
        assert_eq!(&out[..], b"id: 3\nevent: message\ndata: {}\nretry: 5\n\n");
    }
}
