//! Request metadata headers of MCP 2026-07-28 against the body they mirror.
//!
//! A modern request (protocol 2026-07-28 or later, by its `MCP-Protocol-Version` header or by
//! its body's `_meta`) must carry `MCP-Protocol-Version` equal to the body's `_meta` version,
//! `Mcp-Method` equal to `method`, and, for `tools/call`, `resources/read` and `prompts/get`,
//! `Mcp-Name` equal to `params.name` / `params.uri` (Base64-decoded when it uses the
//! `=?base64?…?=` sentinel). Missing or mismatched values are a `HeaderMismatch` (-32020): the
//! gateway decides on the body, and a component behind it that trusted the headers must never
//! see other values. Older revisions are decided from the body alone; they may batch only up to
//! 2025-03-26.
use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::message::{Body, INVALID_REQUEST, Kind, Message};
use crate::policy::sanitize;

/// MCP's `HeaderMismatch` error code.
pub const HEADER_MISMATCH: i64 = -32020;

/// The first revision with request metadata headers and header–body validation.
pub const MODERN: &str = "2026-07-28";
/// The first revision without JSON-RPC batches (they came with 2025-03-26).
const NO_BATCHES: &str = "2025-06-18";

pub const PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
pub const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
pub const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");

/// Which rules a request is held to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Era {
    /// 2026-07-28 and later: headers validated against the body.
    Modern,
    /// Earlier revisions: the body alone decides.
    Legacy,
}

/// A request the headers and body disagree on: the JSON-RPC code, a message for the client
/// (naming only the client's own values, sanitised), and the id to answer with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub code: i64,
    pub why: String,
    pub id: Option<String>,
}

fn mismatch(msg: Option<&Message>, why: impl Into<String>) -> Mismatch {
    Mismatch {
        code: HEADER_MISMATCH,
        why: why.into(),
        id: msg.and_then(|m| m.id.clone()),
    }
}

/// `YYYY-MM-DD`.
fn is_date(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

/// Whether a declared version holds this request to the modern rules. A version that is not a
/// date is treated as modern: it gets the strict rules, never the lenient ones.
fn is_modern(v: &str) -> bool {
    !is_date(v) || v >= MODERN
}

/// The one value of `name`, `Ok(None)` when absent; repeated is an error.
fn single<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    msg: Option<&Message>,
) -> Result<Option<&'a HeaderValue>, Mismatch> {
    let mut all = headers.get_all(name).iter();
    match (all.next(), all.next()) {
        (first, None) => Ok(first),
        (Some(_), Some(_)) => Err(mismatch(msg, format!("the {name} header is repeated"))),
        (None, Some(_)) => unreachable!("a second value without a first"),
    }
}

/// A header value as text: visible ASCII, space and tab only (RFC 9110 field values without
/// obs-text; anything else must use the Base64 sentinel).
fn plain<'a>(
    value: &'a HeaderValue,
    name: &HeaderName,
    msg: Option<&Message>,
) -> Result<&'a str, Mismatch> {
    let ok = value
        .as_bytes()
        .iter()
        .all(|b| b.is_ascii_graphic() || *b == b' ' || *b == b'\t');
    match value.to_str() {
        Ok(text) if ok => Ok(text),
        _ => Err(mismatch(
            msg,
            format!("the {name} header holds invalid characters"),
        )),
    }
}

/// The value of `Mcp-Name` (or an `Mcp-Param-*`): plain, or `=?base64?…?=` decoded to UTF-8.
/// Only canonical Base64 is accepted (padded, no stray bits), as the reference SDKs do: two
/// spellings of one value would be two chances for components to disagree.
pub fn decode_value(raw: &str) -> Result<String, &'static str> {
    const PREFIX: &str = "=?base64?";
    const SUFFIX: &str = "?=";
    let Some(encoded) = raw
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_suffix(SUFFIX))
    else {
        return Ok(raw.to_owned());
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| "its =?base64?…?= value is not valid Base64")?;
    String::from_utf8(bytes).map_err(|_| "its =?base64?…?= value is not UTF-8")
}

/// Checks one request's headers against its body, and says which rules applied.
pub fn check(headers: &HeaderMap, body: &Body) -> Result<Era, Mismatch> {
    let first = body.messages().first();
    let header = match single(headers, &PROTOCOL_VERSION, first)? {
        Some(v) => {
            let text = plain(v, &PROTOCOL_VERSION, first)?;
            if !is_date(text) {
                return Err(mismatch(
                    first,
                    format!(
                        "the MCP-Protocol-Version header `{}` is not a protocol version",
                        sanitize(text.as_bytes())
                    ),
                ));
            }
            Some(text)
        }
        None => None,
    };
    let modern = header.is_some_and(is_modern)
        || body
            .messages()
            .iter()
            .any(|m| m.version.as_deref().is_some_and(is_modern));
    if !modern {
        if let Body::Batch(_) = body
            && header.is_some_and(|v| v >= NO_BATCHES)
        {
            return Err(Mismatch {
                code: INVALID_REQUEST,
                why: format!(
                    "JSON-RPC batches are not part of protocol {}",
                    header.unwrap_or_default()
                ),
                id: None,
            });
        }
        return Ok(Era::Legacy);
    }
    let Body::Single(msg) = body else {
        return Err(Mismatch {
            code: INVALID_REQUEST,
            why: format!("JSON-RPC batches are not part of protocol {MODERN} and later"),
            id: None,
        });
    };
    check_modern(headers, header, msg)?;
    Ok(Era::Modern)
}

fn check_modern(headers: &HeaderMap, header: Option<&str>, msg: &Message) -> Result<(), Mismatch> {
    let m = Some(msg);
    if msg.kind == Kind::Response {
        return Err(Mismatch {
            code: INVALID_REQUEST,
            why: format!("clients do not send JSON-RPC responses in protocol {MODERN} and later"),
            id: msg.id.clone(),
        });
    }
    let Some(header) = header else {
        return Err(mismatch(m, "the MCP-Protocol-Version header is missing"));
    };
    match (msg.version.as_deref(), msg.kind) {
        (Some(body), _) if body != header => {
            return Err(mismatch(
                m,
                format!(
                    "the MCP-Protocol-Version header `{header}` does not match the body's \
                     _meta protocol version `{}`",
                    sanitize(body.as_bytes())
                ),
            ));
        }
        (None, Kind::Request) => {
            return Err(mismatch(
                m,
                "the body's params._meta carries no io.modelcontextprotocol/protocolVersion",
            ));
        }
        _ => {}
    }
    let method = msg.method.as_deref().unwrap_or_default();
    match single(headers, &MCP_METHOD, m)? {
        Some(v) => {
            let text = plain(v, &MCP_METHOD, m)?;
            if text != method {
                return Err(mismatch(
                    m,
                    format!(
                        "the Mcp-Method header `{}` does not match the body's method `{}`",
                        sanitize(text.as_bytes()),
                        sanitize(method.as_bytes())
                    ),
                ));
            }
        }
        None if msg.kind == Kind::Request => {
            return Err(mismatch(m, "the Mcp-Method header is missing"));
        }
        None => {}
    }
    let needs_name = matches!(method, "tools/call" | "resources/read" | "prompts/get");
    match single(headers, &MCP_NAME, m)? {
        Some(v) => {
            let text = plain(v, &MCP_NAME, m)?;
            let decoded = decode_value(text)
                .map_err(|why| mismatch(m, format!("the Mcp-Name header is malformed: {why}")))?;
            if msg.name.as_deref() != Some(decoded.as_str()) {
                return Err(mismatch(
                    m,
                    format!(
                        "the Mcp-Name header `{}` does not match the body's `{}`",
                        sanitize(decoded.as_bytes()),
                        sanitize(msg.name.as_deref().unwrap_or_default().as_bytes())
                    ),
                ));
            }
        }
        None if needs_name && msg.kind == Kind::Request => {
            return Err(mismatch(
                m,
                format!("the Mcp-Name header is missing (required for {method})"),
            ));
        }
        None => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::message::parse;

    fn modern_call(name: &str, version: &str) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":{},"_meta":{{"io.modelcontextprotocol/protocolVersion":"{version}"}}}}}}"#,
            serde_json::to_string(name).unwrap()
        )
    }

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    fn run(body: &str, pairs: &[(&str, &[u8])]) -> Result<Era, Mismatch> {
        check(
            &headers(pairs),
            &parse(body.as_bytes()).expect("valid body"),
        )
    }

    const V: (&str, &[u8]) = ("mcp-protocol-version", b"2026-07-28");
    const CALL: (&str, &[u8]) = ("mcp-method", b"tools/call");

    #[test]
    fn base64_sentinel() {
        #[rustfmt::skip]
        let rows: &[(&str, Result<&str, ()>)] = &[
            ("get_weather", Ok("get_weather")),
            ("=?base64?SGVsbG8sIOS4lueVjA==?=", Ok("Hello, 世界")),
            ("=?base64?IHBhZGRlZCA=?=", Ok(" padded ")),
            ("=?base64?IHBhZGRlZCA?=", Err(())),
            ("=?base64?SGl=?=", Err(())),
            ("=?base64?bGluZTEKbGluZTI=?=", Ok("line1\nline2")),
            ("=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?=", Ok("=?base64?literal?=")),
            ("=?BASE64?SGk=?=", Ok("=?BASE64?SGk=?=")),
            ("=?base64?SGk=", Ok("=?base64?SGk=")),
            ("=?base64?@@@?=", Err(())),
            ("=?base64?/w==?=", Err(())),
        ];
        for (raw, want) in rows {
            assert_eq!(
                decode_value(raw).map_err(drop),
                want.map(str::to_owned),
                "{raw}"
            );
        }
    }

    #[test]
    fn modern_requests_table() {
        type Row = (
            &'static str,
            String,
            Vec<(&'static str, &'static [u8])>,
            Result<Era, &'static str>,
        );
        let name_b64 = b"=?base64?44GT44KT44Gr44Gh44Gv?=".as_slice();
        #[rustfmt::skip]
        let rows: Vec<Row> = vec![
            ("all match", modern_call("add", "2026-07-28"), vec![V, CALL, ("mcp-name", b"add")], Ok(Era::Modern)),
            ("header names are case-insensitive", modern_call("add", "2026-07-28"),
                vec![("MCP-PROTOCOL-VERSION", b"2026-07-28"), ("Mcp-Method", b"tools/call"), ("MCP-NAME", b"add")], Ok(Era::Modern)),
            ("base64 name", modern_call("こんにちは", "2026-07-28"), vec![V, CALL, ("mcp-name", name_b64)], Ok(Era::Modern)),
            ("a later version", modern_call("add", "2027-01-01"),
                vec![("mcp-protocol-version", b"2027-01-01"), CALL, ("mcp-name", b"add")], Ok(Era::Modern)),
            ("missing version header", modern_call("add", "2026-07-28"), vec![CALL, ("mcp-name", b"add")], Err("MCP-Protocol-Version header is missing")),
            ("older header, modern body", modern_call("add", "2026-07-28"),
                vec![("mcp-protocol-version", b"2025-06-18"), CALL, ("mcp-name", b"add")], Err("does not match the body's _meta")),
            ("modern header, older body", modern_call("add", "2025-06-18"), vec![V, CALL, ("mcp-name", b"add")], Err("does not match the body's _meta")),
            ("missing method header", modern_call("add", "2026-07-28"), vec![V, ("mcp-name", b"add")], Err("Mcp-Method header is missing")),
            ("method differs", modern_call("add", "2026-07-28"), vec![V, ("mcp-method", b"tools/list"), ("mcp-name", b"add")], Err("does not match the body's method")),
            ("method case differs", modern_call("add", "2026-07-28"), vec![V, ("mcp-method", b"Tools/Call"), ("mcp-name", b"add")], Err("does not match the body's method")),
            ("missing name", modern_call("add", "2026-07-28"), vec![V, CALL], Err("Mcp-Name header is missing")),
            ("name differs", modern_call("delete_all", "2026-07-28"), vec![V, CALL, ("mcp-name", b"add")], Err("does not match the body's")),
            ("name case differs", modern_call("add", "2026-07-28"), vec![V, CALL, ("mcp-name", b"ADD")], Err("does not match the body's")),
            ("bad base64", modern_call("add", "2026-07-28"), vec![V, CALL, ("mcp-name", b"=?base64?!!?=")], Err("not valid Base64")),
            ("base64 of another name", modern_call("add", "2026-07-28"), vec![V, CALL, ("mcp-name", b"=?base64?ZGVs?=")], Err("does not match")),
            ("obs-text name", modern_call("add", "2026-07-28"), vec![V, CALL, ("mcp-name", b"a\xffdd")], Err("invalid characters")),
            ("repeated name", modern_call("add", "2026-07-28"), vec![V, CALL, ("mcp-name", b"add"), ("mcp-name", b"add")], Err("repeated")),
            ("repeated version", modern_call("add", "2026-07-28"), vec![V, V, CALL, ("mcp-name", b"add")], Err("repeated")),
            ("version not a date", modern_call("add", "2026-07-28"), vec![("mcp-protocol-version", b"latest"), CALL, ("mcp-name", b"add")], Err("is not a protocol version")),
            ("body version not a date is held to modern rules", modern_call("add", "next"),
                vec![("mcp-protocol-version", b"2025-06-18")], Err("does not match the body's _meta")),
        ];
        for (name, body, pairs, want) in rows {
            let got = run(&body, &pairs);
            match (got, want) {
                (Ok(era), Ok(w)) => assert_eq!(era, w, "{name}"),
                (Err(e), Err(needle)) => {
                    assert_eq!(e.code, HEADER_MISMATCH, "{name}: {}", e.why);
                    assert!(e.why.contains(needle), "{name}: {}", e.why);
                    assert_eq!(e.id.as_deref(), Some("1"), "{name}: the id is echoed");
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn other_modern_messages() {
        let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
        assert_eq!(
            run(list, &[V, ("mcp-method", b"tools/list")]),
            Ok(Era::Modern)
        );
        let err = run(
            list,
            &[V, ("mcp-method", b"tools/list"), ("mcp-name", b"x")],
        )
        .expect_err("no name in body");
        assert!(err.why.contains("Mcp-Name"), "{}", err.why);
        let no_meta = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
        let err = run(no_meta, &[V, ("mcp-method", b"tools/list")]).expect_err("meta required");
        assert!(err.why.contains("_meta"), "{}", err.why);
        // Notifications: header requirements are not defined by 2026-07-28; values present must agree.
        let note = r#"{"jsonrpc":"2.0","method":"notifications/x"}"#;
        assert_eq!(run(note, &[V]), Ok(Era::Modern));
        assert!(run(note, &[V, ("mcp-method", b"notifications/y")]).is_err());
        let resp = r#"{"jsonrpc":"2.0","id":3,"result":{}}"#;
        assert_eq!(
            run(resp, &[V]).expect_err("no responses").code,
            INVALID_REQUEST
        );
        let batch = format!("[{}]", modern_call("add", "2026-07-28"));
        assert_eq!(
            run(&batch, &[V, CALL]).expect_err("no batches").code,
            INVALID_REQUEST
        );
    }

    #[test]
    fn legacy_requests_are_decided_from_the_body() {
        let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#;
        assert_eq!(run(init, &[]), Ok(Era::Legacy));
        // Older clients' mismatched or stray headers are forwarded, not judged.
        assert_eq!(
            run(
                init,
                &[
                    ("mcp-protocol-version", b"2025-06-18"),
                    ("mcp-method", b"other"),
                    ("mcp-name", b"x")
                ]
            ),
            Ok(Era::Legacy)
        );
        let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#;
        assert_eq!(
            run(batch, &[]),
            Ok(Era::Legacy),
            "no header: 2025-03-26 at most"
        );
        assert_eq!(
            run(batch, &[("mcp-protocol-version", b"2025-03-26")]),
            Ok(Era::Legacy)
        );
        for v in [b"2025-06-18".as_slice(), b"2025-11-25"] {
            let err = run(batch, &[("mcp-protocol-version", v)]).expect_err("batch");
            assert_eq!(err.code, INVALID_REQUEST);
        }
    }
}
