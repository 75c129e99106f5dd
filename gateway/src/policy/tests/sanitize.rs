//! The sanitiser applied to every value that reaches logs, counters or an error body.
use crate::policy::{MAX_VALUE_CHARS, sanitize};

#[test]
fn sanitize_table() {
    let invalid_utf8: Vec<u8> = (0x80..=0xffu8).take(4).chain([0xff]).collect();
    #[rustfmt::skip]
    let rows: &[(&str, &[u8], &str)] = &[
        ("plain value unchanged", b"localhost:8787", "localhost:8787"),
        ("empty", b"", ""),
        ("double quote", b"a\"b", "a\\x22b"),
        ("backslash, so escapes stay unambiguous", b"a\\x41", "a\\x5cx41"),
        ("label injection", b"\"} evil_metric 1", "\\x22} evil_metric 1"),
        ("newline and carriage return", b"a\r\nb", "a\\x0d\\x0ab"),
        ("tab, NUL, ESC, DEL", b"\t\x00\x1b\x7f", "\\x09\\x00\\x1b\\x7f"),
        ("invalid UTF-8 bytes", &invalid_utf8, "\\x80\\x81\\x82\\x83\\xff"),
        ("UTF-8 e-acute", "\u{e9}".as_bytes(), "\\xc3\\xa9"),
        ("space and backtick kept", b"a b`c", "a b`c"),
    ];
    for (what, raw, expected) in rows {
        assert_eq!(sanitize(raw), *expected, "{what}");
    }
}

#[test]
fn long_values_are_cut_with_a_marker() {
    let exact = "a".repeat(MAX_VALUE_CHARS);
    assert_eq!(
        sanitize(exact.as_bytes()),
        exact,
        "exactly the cap is kept whole"
    );
    let cut = sanitize("a".repeat(MAX_VALUE_CHARS + 1).as_bytes());
    assert_eq!(cut.len(), MAX_VALUE_CHARS);
    assert_eq!(cut, format!("{}...", "a".repeat(MAX_VALUE_CHARS - 3)));
    let escaped = sanitize(&[0xff; 1000]);
    assert!(escaped.len() <= MAX_VALUE_CHARS, "{}", escaped.len());
    assert!(
        escaped.ends_with("\\xff..."),
        "escapes are never split: {escaped}"
    );
}
