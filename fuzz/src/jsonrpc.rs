//! An independent check that a POST body is JSON-RPC 2.0 as MCP sends it, on a plain JSON tree
//! rather than the gateway's borrowed, field-by-field reading.
//!
//! The tree is this module's own, not `serde_json::Value`: with serde_json's `raw_value` feature
//! (the gateway enables it), a `Value` reads an object whose member is named
//! `$serde_json::private::RawValue` as the JSON text of that member's string, so it would refuse
//! valid JSON (the fuzzer found this) and read other JSON than was sent.
use std::fmt;

use serde::{
    Deserialize, Deserializer,
    de::{MapAccess, SeqAccess, Visitor},
};

/// A JSON value. Object members keep their order and repeats; [`Json::get`] reads the last, as
/// most parsers do.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The member `key` of an object (its last occurrence).
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Self::Object(members) => members.iter().rev().find(|(k, _)| k == key).map(|m| &m.1),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Self::Object(_))
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Int(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Int(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::Str(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = Vec::new();
        while let Some(member) = map.next_entry::<String, Json>()? {
            members.push(member);
        }
        Ok(Json::Object(members))
    }
}

/// The messages of a body: one object, or the objects of a non-empty batch.
#[derive(Debug)]
pub enum Checked {
    Messages(Vec<Json>),
    /// Valid JSON that serde_json can't turn into values: a number beyond `f64`, nesting deeper
    /// than its recursion limit, or a lone UTF-16 surrogate escape (valid JSON grammar, but no
    /// Rust string). Only the syntax is checked then.
    Unrepresentable,
}

/// Parses `body` into the tree; `None` when it is JSON the tree can't hold.
pub fn parse(body: &[u8]) -> Result<Option<Json>, String> {
    match serde_json::from_slice::<Json>(body) {
        Ok(json) => Ok(Some(json)),
        Err(err) => {
            let why = err.to_string();
            serde_json::from_slice::<serde::de::IgnoredAny>(body)
                .map_err(|e| format!("not JSON: {e}"))?;
            // serde_json's words for the cases `Checked::Unrepresentable` lists; a lone surrogate
            // is a "lone leading surrogate in hex escape" or an "unexpected end of hex escape".
            let known = ["number out of range", "recursion limit", "hex escape"];
            match known.iter().any(|k| why.contains(k)) {
                true => Ok(None),
                false => Err(format!("JSON, but not to the tree: {why}")),
            }
        }
    }
}

/// Checks `body`; `Err` says which JSON-RPC 2.0 rule it breaks.
pub fn check(body: &[u8]) -> Result<Checked, String> {
    let Some(value) = parse(body)? else {
        return Ok(Checked::Unrepresentable);
    };
    let items = match value {
        Json::Array(items) if items.is_empty() => return Err("an empty batch".into()),
        Json::Array(items) => items,
        single => vec![single],
    };
    for item in &items {
        message(item)?;
    }
    Ok(Checked::Messages(items))
}

/// The member a method names its target with, for the methods that must have one.
pub fn target_member(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// The protocol version key of `params._meta`.
pub const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

fn message(m: &Json) -> Result<(), String> {
    if !m.is_object() {
        return Err(format!("a message is not an object: {m:?}"));
    }
    if m.get("jsonrpc").and_then(Json::as_str) != Some("2.0") {
        return Err("`jsonrpc` is not \"2.0\"".into());
    }
    match m.get("id") {
        None | Some(Json::Str(_) | Json::Int(_)) => {}
        Some(other) => return Err(format!("`id` {other:?} is not a string or an integer")),
    }
    let has = |key| m.get(key).is_some();
    match m.get("method") {
        Some(Json::Str(method)) => {
            if has("result") || has("error") {
                return Err("a request carries `result` or `error`".into());
            }
            let params = m.get("params");
            if params.is_some_and(|p| !p.is_object()) {
                return Err("`params` is not an object".into());
            }
            if let Some(member) = target_member(method) {
                let target = params.and_then(|p| p.get(member));
                if !matches!(target, Some(Json::Str(_))) {
                    return Err(format!("`{method}` without a string `params.{member}`"));
                }
            }
            match params.and_then(|p| p.get("_meta")) {
                None => Ok(()),
                Some(meta) if meta.is_object() => match meta.get(META_VERSION) {
                    None | Some(Json::Str(_)) => Ok(()),
                    Some(_) => Err("the _meta protocol version is not a string".into()),
                },
                Some(_) => Err("`params._meta` is not an object".into()),
            }
        }
        Some(_) => Err("`method` is not a string".into()),
        None if !has("id") => Err("neither a request nor a response".into()),
        None if has("result") == has("error") => {
            Err("a response needs exactly one of `result` and `error`".into())
        }
        None => Ok(()),
    }
}
