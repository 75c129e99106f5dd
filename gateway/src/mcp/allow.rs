//! Method and tool allowlists: which JSON-RPC methods a client may send and which tools it may
//! call (and see in `tools/list`). Pure decisions from the parsed body, never from headers.
//!
//! Patterns are exact names, or end in `*` to match a prefix (`get_*`; `*` alone matches every
//! name). A denied tool is refused even when an allowed pattern also matches it.
use super::message::{Kind, Message};
use crate::policy::sanitize;

/// Methods every MCP session needs, allowed whatever `--allow-method` says, so an allowlist of
/// the methods that do something never breaks the handshake or liveness checks.
pub const ALWAYS_ALLOWED_METHODS: [&str; 5] = [
    "initialize",
    "notifications/initialized",
    "ping",
    "server/discover",
    "notifications/cancelled",
];

/// The allowlist settings as configured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct McpSettings {
    pub allowed_tools: Vec<String>,
    pub denied_tools: Vec<String>,
    pub allowed_methods: Vec<String>,
}

/// A bad pattern, naming the key.
#[derive(Debug, PartialEq, Eq)]
pub struct SettingError {
    pub key: &'static str,
    pub why: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Pattern {
    text: String,
    /// `text` without the trailing `*`, when it had one.
    prefix: Option<usize>,
}

impl Pattern {
    fn new(key: &'static str, text: &str) -> Result<Self, SettingError> {
        let bad = |why: &str| SettingError {
            key,
            why: format!("`{text}`: {why}"),
        };
        if text.is_empty() {
            return Err(bad("empty; give a name, or a prefix ending in `*`"));
        }
        if text.chars().any(char::is_control) {
            return Err(bad("contains a control character"));
        }
        let star = text.find('*');
        if star.is_some_and(|at| at != text.len() - 1) {
            return Err(bad("`*` may only end a pattern (a prefix match)"));
        }
        Ok(Self {
            text: text.to_owned(),
            prefix: star,
        })
    }

    fn matches(&self, name: &str) -> bool {
        match self.prefix {
            Some(len) => name.starts_with(&self.text[..len]),
            None => name == self.text,
        }
    }
}

fn patterns(key: &'static str, list: &[String]) -> Result<Vec<Pattern>, SettingError> {
    list.iter().map(|p| Pattern::new(key, p)).collect()
}

/// Why a message was refused (also the `reason` label of the counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    Method,
    Tool,
}

impl RefusalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Method => "method",
            Self::Tool => "tool",
        }
    }
}

/// A refused message: the reason, the rule that decided (for logs and `check`, never for the
/// client), and the refused method or tool name (sanitised).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: RefusalReason,
    pub rule: String,
    pub value: String,
}

/// The compiled allowlists of one server.
#[derive(Clone, Debug, Default)]
pub struct McpPolicy {
    allowed_tools: Vec<Pattern>,
    denied_tools: Vec<Pattern>,
    allowed_methods: Vec<Pattern>,
}

impl McpPolicy {
    pub fn new(settings: &McpSettings) -> Result<Self, SettingError> {
        Ok(Self {
            allowed_tools: patterns("allowed_tools", &settings.allowed_tools)?,
            denied_tools: patterns("denied_tools", &settings.denied_tools)?,
            allowed_methods: patterns("allowed_methods", &settings.allowed_methods)?,
        })
    }

    /// Whether a tool rule is configured (then `tools/list` results are filtered).
    pub fn filters_tools(&self) -> bool {
        !self.allowed_tools.is_empty() || !self.denied_tools.is_empty()
    }

    /// Whether any rule is configured.
    pub fn is_empty(&self) -> bool {
        !self.filters_tools() && self.allowed_methods.is_empty()
    }

    /// Whether the tool `name` may be called and listed; `Ok` carries the rule that allowed it.
    pub fn tool(&self, name: &str) -> Result<String, Refusal> {
        let refuse = |rule: String| Refusal {
            reason: RefusalReason::Tool,
            rule,
            value: sanitize(name.as_bytes()),
        };
        if let Some(p) = self.denied_tools.iter().find(|p| p.matches(name)) {
            return Err(refuse(format!(
                "tool `{}` matches denied tool `{}`",
                sanitize(name.as_bytes()),
                p.text
            )));
        }
        if self.allowed_tools.is_empty() {
            return Ok("no tool allowlist".to_owned());
        }
        match self.allowed_tools.iter().find(|p| p.matches(name)) {
            Some(p) => Ok(format!("tool matches allowed tool `{}`", p.text)),
            None => Err(refuse(format!(
                "tool `{}` matches no allowed tool (allowed: {})",
                sanitize(name.as_bytes()),
                describe(&self.allowed_tools)
            ))),
        }
    }

    /// Whether the method may be sent; `Ok` carries the rule that allowed it.
    pub fn method(&self, method: &str) -> Result<String, Refusal> {
        if self.allowed_methods.is_empty() {
            return Ok("no method allowlist".to_owned());
        }
        if ALWAYS_ALLOWED_METHODS.contains(&method) {
            return Ok(format!("`{method}` is always allowed"));
        }
        match self.allowed_methods.iter().find(|p| p.matches(method)) {
            Some(p) => Ok(format!("method matches allowed method `{}`", p.text)),
            None => Err(Refusal {
                reason: RefusalReason::Method,
                rule: format!(
                    "method `{}` matches no allowed method (allowed: {}, and always {})",
                    sanitize(method.as_bytes()),
                    describe(&self.allowed_methods),
                    ALWAYS_ALLOWED_METHODS.join(", ")
                ),
                value: sanitize(method.as_bytes()),
            }),
        }
    }

    /// Decides one message: its method, then for `tools/call` its tool. Responses (a client
    /// answering a server's request in older revisions) carry no method and always pass.
    pub fn message(&self, msg: &Message) -> Result<(), Refusal> {
        if msg.kind == Kind::Response {
            return Ok(());
        }
        let method = msg.method.as_deref().unwrap_or_default();
        self.method(method)?;
        if method == "tools/call" {
            // The parser guarantees a string name for tools/call requests; a missing one is
            // refused rather than guessed at.
            self.tool(msg.name.as_deref().unwrap_or_default())?;
        }
        Ok(())
    }
}

fn describe(list: &[Pattern]) -> String {
    list.iter()
        .map(|p| format!("`{}`", p.text))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(tools: &[&str], denied: &[&str], methods: &[&str]) -> McpPolicy {
        let own = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect();
        McpPolicy::new(&McpSettings {
            allowed_tools: own(tools),
            denied_tools: own(denied),
            allowed_methods: own(methods),
        })
        .expect("valid")
    }

    #[test]
    fn tool_decisions() {
        let p = policy(&["get_*", "add"], &["get_secret*"], &[]);
        #[rustfmt::skip]
        let rows = [
            ("add", true), ("get_weather", true), ("get_", true),
            ("get_secret", false), ("get_secrets_all", false),
            ("Add", false), ("add ", false), ("addx", false), ("", false),
            ("delete_all", false), ("GET_weather", false),
        ];
        for (name, allowed) in rows {
            assert_eq!(p.tool(name).is_ok(), allowed, "{name:?}");
        }
        let open = policy(&[], &["rm"], &[]);
        assert!(open.tool("anything").is_ok() && open.tool("rm").is_err());
        assert!(
            policy(&[], &["*"], &[]).tool("x").is_err(),
            "`*` denies every tool"
        );
        assert!(policy(&[], &[], &[]).tool("x").is_ok());
    }

    #[test]
    fn method_decisions_keep_the_lifecycle_open() {
        let p = policy(&[], &[], &["tools/*", "resources/read"]);
        #[rustfmt::skip]
        let rows = [
            ("tools/call", true), ("tools/list", true), ("resources/read", true),
            ("initialize", true), ("ping", true), ("server/discover", true),
            ("notifications/initialized", true), ("notifications/cancelled", true),
            ("resources/list", false), ("prompts/get", false), ("sampling/createMessage", false),
            ("Tools/call", false), ("", false),
        ];
        for (method, allowed) in rows {
            assert_eq!(p.method(method).is_ok(), allowed, "{method:?}");
        }
        assert!(policy(&[], &[], &[]).method("anything/at-all").is_ok());
    }

    #[test]
    fn refusals_carry_reason_and_sanitised_value() {
        let p = policy(&["safe"], &[], &["tools/call"]);
        let err = p.tool("evil\"\n").expect_err("refused");
        assert_eq!(err.reason, RefusalReason::Tool);
        assert_eq!(err.value, "evil\\x22\\x0a");
        assert!(err.rule.contains("`safe`"), "{}", err.rule);
        let err = p.method("prompts/get").expect_err("refused");
        assert_eq!(
            (err.reason, err.value.as_str()),
            (RefusalReason::Method, "prompts/get")
        );
    }

    #[test]
    fn bad_patterns_name_the_key() {
        for (tools, denied, methods, key, needle) in [
            (vec![""], vec![], vec![], "allowed_tools", "empty"),
            (vec!["a*b"], vec![], vec![], "allowed_tools", "may only end"),
            (vec![], vec!["**"], vec![], "denied_tools", "may only end"),
            (
                vec![],
                vec![],
                vec!["tools/\ncall"],
                "allowed_methods",
                "control",
            ),
        ] {
            let own = |l: Vec<&str>| l.into_iter().map(str::to_owned).collect();
            let err = McpPolicy::new(&McpSettings {
                allowed_tools: own(tools),
                denied_tools: own(denied),
                allowed_methods: own(methods),
            })
            .expect_err("invalid");
            assert_eq!(err.key, key);
            assert!(err.why.contains(needle), "{}", err.why);
        }
    }
}
