//! `mcp-gateway check`: explains how the Host/Origin policy, and the method and tool
//! allowlists, decide one request.
//!
//! It builds the request head from the flags and runs the very `Policy::verify` (and
//! `cors::preflight` for `--method OPTIONS` with `--origin`) that the proxy runs; with `--tool`
//! or `--rpc-method`, the very `McpPolicy` decision too.
use std::{net::SocketAddr, process::ExitCode};

use anyhow::Context as _;
use clap::Args;
use http::{
    HeaderName, Method, Request,
    header::{ACCESS_CONTROL_REQUEST_METHOD, HOST, ORIGIN},
    request::Parts,
};

use crate::{
    mcp::{
        McpPolicy, McpSettings,
        message::{Kind, Message},
    },
    policy::{Mode, Policy, PolicySettings, cors},
};

/// Flags of `mcp-gateway check`; the policy flags mean what they mean for `run`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Host header of the request, e.g. localhost:8787.
    #[arg(long)]
    pub host: String,
    /// Origin header of the request, e.g. http://localhost:3000 (none when omitted).
    #[arg(long)]
    pub origin: Option<String>,
    /// Sec-Fetch-Site header of the request (cross-site, same-site, same-origin, none).
    #[arg(long)]
    pub sec_fetch_site: Option<String>,
    /// Policy mode.
    #[arg(long, value_enum, default_value_t = Mode::Permissive)]
    pub mode: Mode,
    /// The gateway's listen address; its port is the port allowed in Host.
    #[arg(long, default_value = crate::config::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Allowed browser origin (repeatable): `scheme://host[:port]` or `scheme://host:*`.
    #[arg(long = "allow-origin", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Extra allowed Host value (repeatable), `name[:port]`.
    #[arg(long = "allow-host", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Request method; OPTIONS with --origin is checked as a CORS preflight.
    #[arg(long, default_value = "POST")]
    pub method: String,
    /// Request target: origin-form (/mcp) or absolute-form (http://localhost:8787/mcp).
    #[arg(long, default_value = "/mcp")]
    pub uri: String,
    /// For a preflight: send Access-Control-Request-Private-Network: true.
    #[arg(long)]
    pub private_network: bool,
    /// The JSON-RPC method of the message [default: tools/call with --tool].
    #[arg(long)]
    pub rpc_method: Option<String>,
    /// The tool a tools/call names.
    #[arg(long)]
    pub tool: Option<String>,
    /// Allowed tool (repeatable), as for `run`.
    #[arg(long = "allow-tool", value_delimiter = ',')]
    pub allowed_tools: Vec<String>,
    /// Denied tool (repeatable), as for `run`.
    #[arg(long = "deny-tool", value_delimiter = ',')]
    pub denied_tools: Vec<String>,
    /// Allowed JSON-RPC method (repeatable), as for `run`.
    #[arg(long = "allow-method", value_delimiter = ',')]
    pub allowed_methods: Vec<String>,
}

/// Prints the decision; exit status 0 when allowed, 1 when rejected.
pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let (allowed, report) = evaluate(args)?;
    print!("{report}");
    Ok(if allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The decision and the text `run` prints: `ALLOW  rule: ...` or `REJECT (origin)  rule: ...`,
/// then, for an MCP message, the allowlists' decision.
pub fn evaluate(args: &CheckArgs) -> anyhow::Result<(bool, String)> {
    let (allowed, mut out) = evaluate_head(args)?;
    let Some((mcp_allowed, mcp)) = evaluate_message(args)? else {
        return Ok((allowed, out));
    };
    out.push_str(&mcp);
    Ok((allowed && mcp_allowed, out))
}

/// The allowlists' decision on the message `--rpc-method` / `--tool` describe, if any.
fn evaluate_message(args: &CheckArgs) -> anyhow::Result<Option<(bool, String)>> {
    let method = match (&args.rpc_method, &args.tool) {
        (Some(method), _) => method.clone(),
        (None, Some(_)) => "tools/call".to_owned(),
        (None, None) => return Ok(None),
    };
    let policy = McpPolicy::new(&McpSettings {
        allowed_tools: args.allowed_tools.clone(),
        denied_tools: args.denied_tools.clone(),
        allowed_methods: args.allowed_methods.clone(),
    })
    .map_err(|e| anyhow::anyhow!("{}: {}", e.key, e.why))?;
    if method == "tools/call" && args.tool.is_none() {
        anyhow::bail!("--rpc-method tools/call needs --tool NAME");
    }
    let msg = Message {
        kind: Kind::Request,
        id: Some("1".to_owned()),
        method: Some(method.clone()),
        name: args.tool.clone(),
        version: None,
    };
    let method_rule = policy.method(&method);
    let tool_rule = match (&method_rule, method.as_str(), &args.tool) {
        (Ok(_), "tools/call", Some(tool)) => Some(policy.tool(tool)),
        _ => None,
    };
    Ok(Some(match policy.message(&msg) {
        Ok(()) => {
            let mut out = format!("ALLOW  {method}: {}\n", method_rule.unwrap_or_default());
            if let Some(Ok(tool)) = tool_rule {
                out.push_str(&format!("  tool: {tool}\n"));
            }
            (true, out)
        }
        Err(refusal) => (
            false,
            format!(
                "REJECT ({})  rule: {}\n  client sees: 403, Forbidden: {} not allowed\n",
                refusal.reason.as_str(),
                refusal.rule,
                refusal.reason.as_str()
            ),
        ),
    }))
}

/// The Host/Origin decision.
fn evaluate_head(args: &CheckArgs) -> anyhow::Result<(bool, String)> {
    let policy = Policy::new(&PolicySettings {
        mode: args.mode,
        listen: args.listen,
        allowed_hosts: args.allowed_hosts.clone(),
        allowed_origins: args.allowed_origins.clone(),
    })?;
    let req = head(args)?;
    if cors::is_preflight(&req) {
        return Ok(match cors::preflight(&policy, &req) {
            Ok(headers) => {
                let mut out = "ALLOW  preflight answered by the gateway (204)\n".to_owned();
                let accepted = policy.verify(&req).ok();
                if let Some(accepted) = accepted {
                    out.push_str(&format!("  rule: {}\n", accepted.rule()));
                }
                for (name, value) in &headers {
                    let value = String::from_utf8_lossy(value.as_bytes());
                    out.push_str(&format!("  {name}: {value}\n"));
                }
                (true, out)
            }
            Err(rejection) => (false, reject_text(&rejection)),
        });
    }
    Ok(match policy.verify(&req) {
        Ok(accepted) => {
            let mut out = format!("ALLOW  rule: {}\n", accepted.rule());
            for (name, value) in &cors::response_headers(&accepted) {
                let value = String::from_utf8_lossy(value.as_bytes());
                out.push_str(&format!("  {name}: {value}\n"));
            }
            (true, out)
        }
        Err(rejection) => (false, reject_text(&rejection)),
    })
}

fn reject_text(rejection: &crate::policy::Rejection) -> String {
    format!(
        "REJECT ({})  rule: {}\n  value: {}\n  client sees: {}\n",
        rejection.reason.as_str(),
        rejection.rule,
        rejection.value,
        rejection.message()
    )
}

/// The request head the flags describe.
fn head(args: &CheckArgs) -> anyhow::Result<Parts> {
    let method = Method::from_bytes(args.method.to_ascii_uppercase().as_bytes())
        .with_context(|| format!("--method: `{}` is not an HTTP method", args.method))?;
    let preflight = method == Method::OPTIONS && args.origin.is_some();
    let mut builder = Request::builder()
        .method(method)
        .uri(args.uri.as_str())
        .header(HOST, args.host.as_str());
    if let Some(origin) = &args.origin {
        builder = builder.header(ORIGIN, origin.as_str());
    }
    if let Some(site) = &args.sec_fetch_site {
        builder = builder.header("sec-fetch-site", site.as_str());
    }
    if preflight {
        builder = builder.header(ACCESS_CONTROL_REQUEST_METHOD, "POST");
        if args.private_network {
            let name = HeaderName::from_static("access-control-request-private-network");
            builder = builder.header(name, "true");
        }
    }
    let (parts, ()) = builder
        .body(())
        .context("--host, --origin, --sec-fetch-site or --uri is not a valid HTTP value")?
        .into_parts();
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        check: CheckArgs,
    }

    fn check(argv: &[&str]) -> anyhow::Result<(bool, String)> {
        let cli = Cli::try_parse_from(std::iter::once("check").chain(argv.iter().copied()))?;
        evaluate(&cli.check)
    }

    #[test]
    fn decisions_and_output() {
        #[rustfmt::skip]
        let rows: &[(&[&str], bool, &str)] = &[
            (&["--host", "localhost:8787"], true, "ALLOW  rule: Host `localhost:8787` is allowed"),
            (&["--host", "evil.test:8787"], false, "REJECT (host)  rule: Host `evil.test:8787` is not an allowed host"),
            (&["--host", "localhost:8787", "--origin", "http://evil.test"], false, "REJECT (origin)  rule: Origin `http://evil.test`"),
            (&["--host", "localhost:8787", "--origin", "http://localhost:3000"], true, "access-control-allow-origin: http://localhost:3000"),
            (&["--host", "localhost:8787", "--mode", "strict", "--sec-fetch-site", "cross-site"], false, "REJECT (fetch_metadata)"),
            (&["--host", "localhost:8787", "--mode", "strict", "--allow-origin", "https://a.test", "--origin", "https://a.test"], true, "ALLOW"),
            (&["--host", "box.lan:9000", "--allow-host", "box.lan:9000"], true, "ALLOW"),
            (&["--host", "localhost:9000", "--listen", "127.0.0.1:9000"], true, "ALLOW"),
            (&["--host", "localhost:8787", "--method", "OPTIONS", "--origin", "http://localhost:3000", "--private-network"], true, "access-control-allow-private-network: true"),
            (&["--host", "localhost:8787", "--method", "options", "--origin", "http://evil.test", "--private-network"], false, "REJECT (origin)"),
            (&["--host", "localhost:8787", "--tool", "add", "--allow-tool", "add"], true, "tool: tool matches allowed tool `add`"),
            (&["--host", "localhost:8787", "--tool", "get_x", "--allow-tool", "get_*", "--deny-tool", "get_x"], false, "REJECT (tool)  rule: tool `get_x` matches denied tool `get_x`"),
            (&["--host", "localhost:8787", "--tool", "rm", "--allow-tool", "add,count"], false, "matches no allowed tool (allowed: `add`, `count`)"),
            (&["--host", "localhost:8787", "--rpc-method", "prompts/get", "--allow-method", "tools/*"], false, "REJECT (method)"),
            (&["--host", "localhost:8787", "--rpc-method", "initialize", "--allow-method", "tools/*"], true, "`initialize` is always allowed"),
            (&["--host", "evil.test:8787", "--tool", "add"], false, "REJECT (host)"),
        ];
        for (argv, allowed, needle) in rows {
            let (got, out) = check(argv).expect("valid flags");
            assert_eq!(got, *allowed, "{argv:?}: {out}");
            assert!(out.contains(needle), "{argv:?}: {out}");
        }
    }

    #[test]
    fn invalid_settings_are_errors() {
        let err = check(&["--host", "localhost:8787", "--allow-origin", "*"]).expect_err("invalid");
        assert!(err.to_string().starts_with("allowed_origins: `*`"), "{err}");
        let err =
            check(&["--host", "localhost:8787", "--allow-host", "*.x.test"]).expect_err("invalid");
        assert!(
            err.to_string().starts_with("allowed_hosts: `*.x.test`"),
            "{err}"
        );
    }

    #[test]
    fn a_message_without_the_tool_it_calls_is_an_error() {
        let err = check(&["--host", "localhost:8787", "--rpc-method", "tools/call"])
            .expect_err("invalid");
        assert!(err.to_string().contains("--tool NAME"), "{err}");
        let err = check(&[
            "--host",
            "localhost:8787",
            "--tool",
            "x",
            "--allow-tool",
            "a*b",
        ])
        .expect_err("invalid");
        assert!(err.to_string().starts_with("allowed_tools:"), "{err}");
    }

    #[test]
    fn exit_codes() {
        let cli = Cli::try_parse_from(["check", "--host", "evil.test:8787"]).expect("flags");
        assert_eq!(run(&cli.check).expect("runs"), ExitCode::from(1));
        let cli = Cli::try_parse_from(["check", "--host", "localhost:8787"]).expect("flags");
        assert_eq!(run(&cli.check).expect("runs"), ExitCode::SUCCESS);
    }
}
