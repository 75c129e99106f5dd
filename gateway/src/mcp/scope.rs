//! Which requests carry MCP messages, and so are read and checked before they are forwarded.
//!
//! 1. POSTs to the MCP endpoint: the upstream URL's path, and the message paths a legacy
//!    HTTP+SSE server announces in its `endpoint` event (learned from the upstream's own
//!    responses, at most [`MAX_LEARNED`]).
//! 2. Any other POST whose body *is* JSON-RPC: a JSON object with a `jsonrpc` member, or an
//!    array holding one. An upstream that also routes `/mcp/`, `//mcp` or a percent-encoded
//!    spelling of its endpoint to the MCP handler can't carry a refused call past the checks.
//!
//! Other requests (an OAuth form POST, a JSON registration request) pass with the Host/Origin
//! and auth checks only. A compressed request body (`Content-Encoding` other than `identity`)
//! is refused on every path: the gateway can't see into it, and some frameworks inflate it
//! before parsing.
use std::sync::RwLock;

use http::{HeaderMap, header};

/// Most legacy message paths remembered per server.
pub const MAX_LEARNED: usize = 8;

/// Whether the request declares exactly one `Content-Type` of `application/json` (any case,
/// any parameters).
pub fn is_json(headers: &HeaderMap) -> bool {
    let mut all = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(value), None) = (all.next(), all.next()) else {
        return false;
    };
    let media = value
        .as_bytes()
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default();
    media.trim_ascii().eq_ignore_ascii_case(b"application/json")
}

/// Whether the body is encoded (compressed): any `Content-Encoding` but `identity`.
pub fn is_encoded(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|coding| {
            let coding = coding.trim_ascii();
            !coding.is_empty() && !coding.eq_ignore_ascii_case(b"identity")
        })
}

/// Whether `body` is meant as JSON-RPC: valid JSON, an object with a `jsonrpc` member or an
/// array holding such an object.
///
/// Read as `message::parse` reads a body, member names only: a `serde_json::Value` refuses
/// valid JSON it cannot hold (a number beyond `f64` such as `1e400`, a lone surrogate escape in
/// a string, deep nesting), and such a message would then pass unchecked.
pub fn looks_like_jsonrpc(body: &[u8]) -> bool {
    use std::collections::HashMap;

    use serde::de::IgnoredAny;
    use serde_json::value::RawValue;

    let is_message = |text: &[u8]| {
        serde_json::from_slice::<HashMap<String, IgnoredAny>>(text)
            .is_ok_and(|members| members.contains_key("jsonrpc"))
    };
    if body.trim_ascii_start().starts_with(b"[") {
        return serde_json::from_slice::<Vec<&RawValue>>(body)
            .is_ok_and(|items| items.iter().any(|raw| is_message(raw.get().as_bytes())));
    }
    is_message(body)
}

/// The target (path and query) of a legacy `endpoint` event's data: `/messages/?session_id=…`
/// or an absolute `http://host/messages/?…`. It is what the client POSTs its messages to.
pub fn endpoint_target(data: &str) -> Option<String> {
    let data = data.trim();
    let target = if data.starts_with('/') {
        data
    } else {
        let rest = data
            .strip_prefix("http://")
            .or_else(|| data.strip_prefix("https://"))?;
        &rest[rest.find('/')?..]
    };
    let target = target.split('#').next().unwrap_or_default();
    (target.starts_with('/') && target.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| target.to_owned())
}

/// The path of a legacy `endpoint` event's data (its target without the query).
pub fn endpoint_path(data: &str) -> Option<String> {
    let target = endpoint_target(data)?;
    Some(target.split('?').next().unwrap_or_default().to_owned())
}

/// The MCP paths of one server.
#[derive(Debug)]
pub struct Paths {
    endpoint: String,
    learned: RwLock<Vec<String>>,
}

impl Paths {
    pub fn new(endpoint: &str) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            learned: RwLock::new(Vec::new()),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether `path` is the endpoint or a learned message path.
    pub fn contains(&self, path: &str) -> bool {
        path == self.endpoint
            || self
                .learned
                .read()
                .is_ok_and(|learned| learned.iter().any(|p| p == path))
    }

    /// Remembers a message path the upstream announced; `false` when it was known or the list
    /// is full.
    pub fn learn(&self, path: String) -> bool {
        let Ok(mut learned) = self.learned.write() else {
            return false;
        };
        if path == self.endpoint || learned.contains(&path) || learned.len() >= MAX_LEARNED {
            return false;
        }
        learned.push(path);
        true
    }

    /// The learned message paths.
    pub fn learned(&self) -> Vec<String> {
        self.learned.read().map(|l| l.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(name: header::HeaderName, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn content_types() {
        #[rustfmt::skip]
        let rows: &[(&[&str], bool)] = &[
            (&["application/json"], true),
            (&["Application/JSON; charset=utf-8"], true),
            (&[" application/json ;charset=UTF-8"], true),
            (&[], false),
            (&["text/plain"], false),
            (&["text/plain; application/json"], false),
            (&["application/json-rpc"], false),
            (&["application/jsonx"], false),
            (&["multipart/form-data; boundary=x"], false),
            (&["application/x-www-form-urlencoded"], false),
            (&["application/json", "application/json"], false),
        ];
        for (values, want) in rows {
            assert_eq!(
                is_json(&headers(header::CONTENT_TYPE, values)),
                *want,
                "{values:?}"
            );
        }
    }

    #[test]
    fn encodings() {
        #[rustfmt::skip]
        let rows: &[(&[&str], bool)] = &[
            (&[], false), (&["identity"], false), (&["IDENTITY"], false), (&[""], false),
            (&["gzip"], true), (&["identity, gzip"], true), (&["br"], true), (&["identity", "deflate"], true),
        ];
        for (values, want) in rows {
            assert_eq!(
                is_encoded(&headers(header::CONTENT_ENCODING, values)),
                *want,
                "{values:?}"
            );
        }
    }

    #[test]
    fn jsonrpc_bodies_are_recognised_anywhere() {
        #[rustfmt::skip]
        let rows: &[(&str, bool)] = &[
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#, true),
            (r#"{"jsonrpc":1}"#, true),
            (r#"[{"jsonrpc":"2.0","method":"ping","id":1}]"#, true),
            (r#"[1,{"jsonrpc":"2.0"}]"#, true),
            (r#"{"client_name":"x","redirect_uris":["http://localhost/cb"]}"#, false),
            ("grant_type=authorization_code&code=abc", false),
            ("[1,2]", false),
            ("", false),
            ("{\"jsonrpc\":", false),
            // Valid JSON that serde_json's Value can't hold: `message::parse` reads these as
            // messages, so they must not pass unchecked (the `jsonrpc` fuzz target checks this).
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","n":1e400}}"#, true),
            (r#"[{"jsonrpc":"2.0","id":1,"method":"ping","params":{"s":"\ud800"}}]"#, true),
            (r#"{"jsonrpc":"2.0","jsonrpc":"2.0"}"#, true),
            (r#"{"client_name":"x","n":1e400}"#, false),
        ];
        for (body, want) in rows {
            assert_eq!(looks_like_jsonrpc(body.as_bytes()), *want, "{body}");
        }
    }

    #[test]
    fn endpoint_event_paths() {
        #[rustfmt::skip]
        let rows: &[(&str, Option<&str>)] = &[
            ("/messages/?session_id=abc", Some("/messages/")),
            ("/messages", Some("/messages")),
            ("http://127.0.0.1:8000/messages/?session_id=1", Some("/messages/")),
            ("https://h/x/y#f", Some("/x/y")),
            ("messages/", None),
            ("http://host-without-path", None),
            ("/a b", None),
        ];
        for (data, want) in rows {
            assert_eq!(endpoint_path(data).as_deref(), *want, "{data}");
        }
        assert_eq!(
            endpoint_target("http://h:1/messages/?session_id=ab#x").as_deref(),
            Some("/messages/?session_id=ab")
        );
    }

    #[test]
    fn learned_paths_are_bounded() {
        let paths = Paths::new("/mcp");
        assert!(paths.contains("/mcp") && !paths.contains("/mcp/"));
        assert!(paths.learn("/messages/".into()));
        assert!(!paths.learn("/messages/".into()), "known");
        assert!(!paths.learn("/mcp".into()), "the endpoint");
        for i in 0..20 {
            paths.learn(format!("/m{i}"));
        }
        assert_eq!(paths.learned().len(), MAX_LEARNED);
        assert!(paths.contains("/messages/"));
    }
}
