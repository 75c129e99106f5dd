//! `jsonrpc`: the MCP body inspection of a POST (`mcp::message::parse`, `mcp::scope`'s JSON-RPC
//! sniffing, `mcp::headers::check` and the method/tool allowlists of `mcp::allow`) against an
//! independent reading of the body as a whole JSON tree (`src/jsonrpc.rs`).
//!
//! Input: the body; or `name: value` header lines, an empty line, then the body (see
//! `seeds/jsonrpc/`).
//!
//! Properties:
//! - no panic;
//! - a body the gateway accepts is JSON-RPC 2.0 to the independent check, with the same kind,
//!   id, method, target name and protocol version per message;
//! - a body the gateway accepts as a message is also one `scope` recognises as JSON-RPC (else a
//!   POST of it to any path but the endpoint would be forwarded unchecked);
//! - a request held to the 2026-07-28 header rules carries `MCP-Protocol-Version`, `Mcp-Method`
//!   and `Mcp-Name` equal to its body's values;
//! - a message the allowlists pass is allowed by a plain re-reading of their rules.
#![no_main]

use gateway_fuzz::jsonrpc::{self, Checked, Json, META_VERSION};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use mcp_gateway::mcp::{
    McpPolicy, McpSettings,
    allow::ALWAYS_ALLOWED_METHODS,
    headers::{self, Era},
    message::{self, Kind, Message},
    scope,
};

/// The allowlists checked: a tool prefix, a denied tool inside it, a method prefix and name.
fn policy() -> McpPolicy {
    McpPolicy::new(&McpSettings {
        allowed_tools: vec!["get_*".into()],
        denied_tools: vec!["get_secrets".into()],
        allowed_methods: vec!["tools/*".into(), "resources/read".into()],
    })
    .expect("valid allowlists")
}

/// The allowlists above, read plainly.
fn allowed(m: &Message) -> bool {
    if m.kind == Kind::Response {
        return true;
    }
    let method = m.method.as_deref().unwrap_or_default();
    let method_ok = ALWAYS_ALLOWED_METHODS.contains(&method)
        || method.starts_with("tools/")
        || method == "resources/read";
    let name = m.name.as_deref().unwrap_or_default();
    let tool_ok = method != "tools/call" || (name.starts_with("get_") && name != "get_secrets");
    method_ok && tool_ok
}

/// Splits the input into headers and body.
fn split(data: &[u8]) -> (HeaderMap, &[u8]) {
    let mut map = HeaderMap::new();
    let Some(at) = data.windows(2).position(|w| w == b"\n\n") else {
        return (map, data);
    };
    for line in data[..at].split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = HeaderName::from_bytes(&line[..colon]);
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (name, value) {
            map.append(name, value);
        }
    }
    (map, &data[at + 2..])
}

fn single<'a>(map: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    let mut all = map.get_all(name).iter();
    match (all.next(), all.next()) {
        (Some(value), None) => value.to_str().ok(),
        _ => None,
    }
}

/// The gateway's reading of one message against the independent one.
fn compare(m: &Message, obj: &Json) {
    let method = obj.get("method").and_then(Json::as_str);
    assert_eq!(m.method.as_deref(), method, "method");
    let kind = match (method, obj.get("id").is_some()) {
        (Some(_), true) => Kind::Request,
        (Some(_), false) => Kind::Notification,
        (None, _) => Kind::Response,
    };
    assert_eq!(m.kind, kind, "kind");
    let id = m.id.as_deref().map(|text| {
        jsonrpc::parse(text.as_bytes())
            .ok()
            .flatten()
            .expect("the id is JSON")
    });
    assert_eq!(id.as_ref(), obj.get("id"), "id");
    let params = obj.get("params");
    let string = |key: &str| params.and_then(|p| p.get(key)).and_then(Json::as_str);
    let name = match method.and_then(jsonrpc::target_member) {
        Some(member) => string(member),
        None => string("name").or(string("uri")),
    };
    if m.kind != Kind::Response {
        assert_eq!(m.name.as_deref(), name, "target name");
    }
    let version = params
        .and_then(|p| p.get("_meta"))
        .and_then(|meta| meta.get(META_VERSION))
        .and_then(Json::as_str);
    assert_eq!(m.version.as_deref(), version, "protocol version");
}

fuzz_target!(|data: &[u8]| {
    let (map, body) = split(data);
    let looks_like = scope::looks_like_jsonrpc(body);
    let Ok(parsed) = message::parse(body) else {
        return;
    };
    let input = String::from_utf8_lossy(data);
    assert!(
        looks_like,
        "a message scope doesn't recognise as JSON-RPC:\n{input}"
    );
    match jsonrpc::check(body) {
        Err(why) => panic!("accepted, but not JSON-RPC 2.0: {why}\n{input}"),
        Ok(Checked::Unrepresentable) => {}
        Ok(Checked::Messages(objects)) => {
            let batch = body.trim_ascii_start().starts_with(b"[");
            assert_eq!(
                matches!(parsed, message::Body::Batch(_)),
                batch,
                "batch or not"
            );
            assert_eq!(parsed.messages().len(), objects.len(), "message count");
            for (m, obj) in parsed.messages().iter().zip(&objects) {
                compare(m, obj);
            }
        }
    }

    if let Ok(Era::Modern) = headers::check(&map, &parsed) {
        let message::Body::Single(m) = &parsed else {
            panic!("a modern batch passed");
        };
        assert_ne!(m.kind, Kind::Response, "a modern response passed");
        let version = single(&map, &headers::PROTOCOL_VERSION).expect("one version header");
        assert!(version.len() == 10, "not a date: {version}");
        if let Some(body_version) = &m.version {
            assert_eq!(version, body_version, "version header and body");
        }
        if m.kind == Kind::Request {
            assert_eq!(
                single(&map, &headers::MCP_METHOD),
                m.method.as_deref(),
                "Mcp-Method and body"
            );
            let name = single(&map, &headers::MCP_NAME);
            if let Some(member) = m.method.as_deref().and_then(jsonrpc::target_member) {
                let name = name.unwrap_or_else(|| panic!("no Mcp-Name for params.{member}"));
                if !name.starts_with("=?base64?") {
                    assert_eq!(Some(name), m.name.as_deref(), "Mcp-Name and body");
                }
            }
        }
    }

    let policy = policy();
    for m in parsed.messages() {
        if policy.message(m).is_ok() {
            assert!(allowed(m), "the allowlists passed a refused message: {m:?}");
        }
    }
});
