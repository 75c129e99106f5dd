//! Makes a hostile header value safe for logs, counter labels and error bodies.

/// Longest sanitised value, in chars, including the `...` marker of a cut value.
pub const MAX_VALUE_CHARS: usize = 128;

/// Escapes every byte that is not printable ASCII, and `"` and `\`, as `\xNN`, and cuts the
/// result to [`MAX_VALUE_CHARS`].
///
/// Escaping the quote and the backslash too keeps the output injective and lets it sit inside
/// a quoted log field or a Prometheus label without closing it (`"} evil_metric 1`).
pub fn sanitize(raw: &[u8]) -> String {
    const MARKER: &str = "...";
    let mut out = String::with_capacity(raw.len().min(MAX_VALUE_CHARS));
    // Where to cut if the whole value turns out not to fit: the last whole piece that leaves
    // room for the marker, so that an escape is never split.
    let mut cut_at = 0;
    for &byte in raw {
        match byte {
            0x20..=0x7e if byte != b'"' && byte != b'\\' => out.push(char::from(byte)),
            _ => out.push_str(&format!("\\x{byte:02x}")),
        }
        if out.len() > MAX_VALUE_CHARS {
            out.truncate(cut_at);
            out.push_str(MARKER);
            break;
        }
        if out.len() <= MAX_VALUE_CHARS - MARKER.len() {
            cut_at = out.len();
        }
    }
    out
}
