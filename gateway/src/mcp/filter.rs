//! `tools/list` results without the tools the allowlists refuse, so the model is never offered a
//! tool it can't call. Only a JSON-RPC response whose `result.tools` is an array is rewritten
//! (alone, or inside a batch); anything else is left byte for byte as it was.
use bytes::Bytes;
use serde_json::Value;

use super::{McpPolicy, sse};

/// Drops the refused tools from `result.tools` of one response; whether it was a tools result.
fn filter_message(msg: &mut Value, policy: &McpPolicy) -> bool {
    let Some(tools) = msg
        .get_mut("result")
        .and_then(|r| r.get_mut("tools"))
        .and_then(Value::as_array_mut)
    else {
        return false;
    };
    // A tool without a string name can't be checked: it is not offered (fail closed).
    tools.retain(|tool| {
        tool.get("name")
            .and_then(Value::as_str)
            .is_some_and(|name| policy.tool(name).is_ok())
    });
    true
}

/// The JSON text `json` with refused tools removed from every tools result in it, or `None`
/// when it holds no tools result (or is not JSON: then no client can read a tool list from it
/// either).
pub fn tools_json(json: &[u8], policy: &McpPolicy) -> Option<Vec<u8>> {
    let mut value: Value = serde_json::from_slice(json).ok()?;
    let changed = match &mut value {
        Value::Array(batch) => {
            // Every message of the batch, not just up to the first tools result.
            let mut any = false;
            for msg in batch {
                any |= filter_message(msg, policy);
            }
            any
        }
        msg => filter_message(msg, policy),
    };
    changed.then(|| serde_json::to_vec(&value).unwrap_or_default())
}

/// One SSE event with refused tools removed from its data, or `None` to pass it as it was.
pub fn tools_event(raw: &[u8], policy: &McpPolicy) -> Option<Bytes> {
    let event = sse::parse(raw);
    if !event.has_data {
        return None;
    }
    let json = tools_json(event.data.as_bytes(), policy)?;
    // Compact JSON holds no line break, so it fits one data line.
    Some(sse::with_data(raw, &String::from_utf8_lossy(&json)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::McpSettings;

    fn policy() -> McpPolicy {
        McpPolicy::new(&McpSettings {
            allowed_tools: vec!["get_*".into(), "add".into()],
            denied_tools: vec!["get_secret".into()],
            allowed_methods: vec![],
        })
        .expect("valid")
    }

    fn names(json: &[u8]) -> Vec<String> {
        let v: Value = serde_json::from_slice(json).expect("JSON");
        v["result"]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .map(|t| t["name"].as_str().unwrap_or("?").to_owned())
            .collect()
    }

    const LIST: &str = r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"add","inputSchema":{"type":"object"}},{"name":"get_weather","description":"w"},{"name":"get_secret"},{"name":"rm_rf"},{"name":7},{"description":"no name"}],"nextCursor":"c1"}}"#;

    #[test]
    fn refused_tools_are_removed_and_everything_else_is_kept() {
        let out = tools_json(LIST.as_bytes(), &policy()).expect("a tools result");
        assert_eq!(names(&out), ["add", "get_weather"]);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["result"]["nextCursor"], "c1");
        assert_eq!(v["id"], 2);
        assert_eq!(v["result"]["tools"][0]["inputSchema"]["type"], "object");
        // Member order is kept, so the rewrite is the original minus the refused tools.
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"add""#),
            "{text}"
        );
    }

    #[test]
    fn anything_but_a_tools_result_is_left_alone() {
        for other in [
            r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":"not a list"}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"tools"}}"#,
            "not json",
        ] {
            assert_eq!(tools_json(other.as_bytes(), &policy()), None, "{other}");
        }
    }

    #[test]
    fn batches_and_sse_events_are_filtered() {
        let batch = format!(r#"[{{"jsonrpc":"2.0","id":1,"result":{{}}}},{LIST}]"#);
        let out = tools_json(batch.as_bytes(), &policy()).expect("a tools result");
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[1]["result"]["tools"].as_array().unwrap().len(), 2);

        let event = format!("id: 9\nevent: message\ndata: {LIST}\n\n");
        let out = tools_event(event.as_bytes(), &policy()).expect("rewritten");
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(
            text.starts_with("id: 9\nevent: message\ndata: {") && text.ends_with("}\n\n"),
            "{text}"
        );
        let data = sse::parse(&out).data;
        assert_eq!(names(data.as_bytes()), ["add", "get_weather"]);
        // Data split over several lines is joined before it is read.
        let at = LIST.find("\"result\"").unwrap();
        let split = format!("data: {}\ndata: {}\n\n", &LIST[..at], &LIST[at..]);
        assert!(tools_event(split.as_bytes(), &policy()).is_some());
        assert_eq!(
            tools_event(b"event: endpoint\ndata: /messages/\n\n", &policy()),
            None
        );
        assert_eq!(tools_event(b": keep-alive\n\n", &policy()), None);
    }
}
