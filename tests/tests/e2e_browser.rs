//! A real DNS-rebinding attack and a cross-site attack from headless Chromium, against the real
//! gateway in front of the Python SDK server, each with a control run against the bare server
//! (the attack must succeed there, or the test proves nothing).
//!
//! Chromium maps rebind.test and evil.test to 127.0.0.1 (`--host-resolver-rules`), so the
//! rebinding is played by swapping what listens on the page's own port: the attacker's server,
//! then the victim. See tests/e2e/attack.html and crosssite.html, and browser.rs for the flags.
use std::{net::TcpListener, time::Duration};

use mcp_gateway_tests::{
    browser::{Chromium, Collector, EVIL_HOST, REBIND_HOST, Rebinding, page_server, steps},
    e2e::{Gateway, Transport, Upstream, free_port, wait_listening},
};
use serde_json::Value;

const PAGE_TIMEOUT: Duration = Duration::from_secs(60);

fn statuses(reports: &[Value]) -> Vec<i64> {
    steps(reports, "initialize")
        .iter()
        .filter_map(|r| r["status"].as_i64())
        .collect()
}

#[test]
fn rebinding_attack_from_chromium_is_refused_by_the_gateway() {
    let upstream = Upstream::start(free_port(), Transport::Streamable, false);
    let attack = Rebinding::start(None, 400);
    // The victim takes over the page's name and port: the gateway, protecting the upstream.
    let gateway = Gateway::start(attack.port, upstream.port);

    let reports = attack.finish(PAGE_TIMEOUT);

    let refused: Vec<&Value> = steps(&reports, "initialize")
        .into_iter()
        .filter(|r| r["status"] == 403)
        .collect();
    assert_eq!(
        refused.len(),
        3,
        "the page stops after three answers from the victim, all 403: {reports:?}"
    );
    for r in &refused {
        let body: Value = serde_json::from_str(r["body"].as_str().expect("body")).expect("JSON");
        assert_eq!(body["error"]["code"], -32000, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Forbidden: host not allowed")),
            "{body}"
        );
    }
    assert!(
        steps(&reports, "tools/call").is_empty(),
        "the page got to call a tool: {reports:?}"
    );
    let host = format!("{REBIND_HOST}:{}", attack.port);
    let rejections = gateway.rejections();
    assert!(
        rejections.len() >= 3
            && rejections
                .iter()
                .all(|(reason, v)| reason == "host" && *v == host),
        "the gateway's rejection log: {rejections:?}"
    );
    let counted = gateway.rejections_total("host", &host);
    assert!(
        counted >= 3,
        "rejections_total{{reason=host,origin={host}}} = {counted}"
    );
    assert_eq!(
        upstream.records(),
        Vec::<Value>::new(),
        "something reached the upstream"
    );
}

/// Control: the same page and steps, with the bare SDK server (its own protection off) on the
/// page's port. The attack succeeds and the tool runs.
#[test]
fn control_rebinding_attack_from_chromium_succeeds_against_a_bare_server() {
    let attack = Rebinding::start(None, 400);
    let upstream = Upstream::start(attack.port, Transport::Streamable, false);

    let reports = attack.finish(PAGE_TIMEOUT);

    let calls = steps(&reports, "tools/call");
    assert_eq!(calls.len(), 1, "{reports:?}");
    assert_eq!(calls[0]["status"], 200, "{reports:?}");
    assert_eq!(calls[0]["result"], "42", "the page read the tool's answer");
    assert!(statuses(&reports).contains(&200), "{reports:?}");
    let tools = upstream.tool_calls();
    assert_eq!(tools.len(), 1, "{tools:?}");
    assert_eq!(tools[0]["name"], "add");
    assert_eq!(tools[0]["args"], serde_json::json!({"a": 40, "b": 2}));
    let origin = format!("http://{REBIND_HOST}:{}", attack.port);
    assert!(
        upstream
            .requests()
            .iter()
            .all(|r| r["host"] == origin[7..] && r["origin"] == origin),
        "the browser's requests, as the server saw them: {:?}",
        upstream.requests()
    );
}

/// Serves client2026.html from `page_host` (its own port) with the gateway at `target`; returns
/// the page's reports once it is done.
fn browser_client(page_host: &str, target: &str) -> Vec<Value> {
    let collector = Collector::start();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the page's server");
    let port = listener.local_addr().expect("addr").port();
    let _page = page_server(listener, "client2026.html");
    let url = format!(
        "http://{page_host}:{port}/?target={target}&collector={}",
        collector.url()
    );
    let _browser = Chromium::open(&url, None);
    collector.wait_for(PAGE_TIMEOUT, |r| !steps(r, "finished").is_empty())
}

/// A browser MCP client on protocol 2026-07-28 (metadata headers, hence a CORS preflight): from
/// an allowed origin it gets through the gateway and reads the tool's answer; from another
/// origin the preflight is refused and nothing reaches the server.
#[test]
fn a_browser_client_speaking_2026_07_28_gets_through_only_from_an_allowed_origin() {
    let upstream = Upstream::start(free_port(), Transport::Streamable, false);
    let gateway = Gateway::start(free_port(), upstream.port);
    wait_listening(gateway.listen, Duration::from_secs(10));
    let target = format!("http://127.0.0.1:{}/mcp", gateway.listen.port());

    // http://localhost:P is an allowed origin in the default (permissive) mode.
    let reports = browser_client("localhost", &target);
    let called = steps(&reports, "called");
    assert_eq!(called.len(), 1, "{reports:?}");
    assert_eq!(
        called[0]["status"], 200,
        "the allowed page was refused: {reports:?}"
    );
    let body = called[0]["body"]
        .as_str()
        .expect("the page read the answer");
    assert!(body.contains("\"id\":7") && body.contains('5'), "{body}");
    let tools = upstream.tool_calls();
    assert_eq!(tools.len(), 1, "{tools:?}");
    let requests = upstream.requests();
    let posted: Vec<&Value> = requests.iter().filter(|r| r["method"] == "POST").collect();
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert_eq!(posted[0]["mcp_method"], "tools/call");
    assert_eq!(posted[0]["mcp_name"], "add");
    assert!(
        upstream.requests().iter().all(|r| r["method"] != "OPTIONS"),
        "the preflight is the gateway's to answer"
    );

    // The same page on another origin: the preflight is refused, fetch fails.
    let reports = browser_client(EVIL_HOST, &target);
    let called = steps(&reports, "called");
    assert_eq!(called.len(), 1, "{reports:?}");
    assert!(
        called[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("Failed to fetch")),
        "the disallowed page got an answer: {reports:?}"
    );
    assert_eq!(
        upstream.tool_calls().len(),
        1,
        "the disallowed page ran a tool"
    );
    assert!(
        gateway
            .rejections()
            .iter()
            .any(|(reason, v)| reason == "origin" && v.starts_with("http://evil.test:")),
        "{:?}",
        gateway.rejections()
    );
}

/// Serves crosssite.html as http://evil.test:Q/ and has it fire `rounds` no-cors POST pairs
/// at `target`; returns the reports once the page is done.
fn cross_site(target: &str, rounds: u32) -> (u16, Vec<Value>) {
    let collector = Collector::start();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the evil server");
    let port = listener.local_addr().expect("addr").port();
    let _evil = page_server(listener, "crosssite.html");
    let url = format!(
        "http://{EVIL_HOST}:{port}/?target={target}&collector={}&count={rounds}",
        collector.url()
    );
    let _browser = Chromium::open(&url, None);
    let reports = collector.wait_for(PAGE_TIMEOUT, |r| !steps(r, "finished").is_empty());
    let sent = steps(&reports, "sent");
    assert_eq!(sent.len() as u32, 2 * rounds, "{reports:?}");
    assert!(
        sent.iter().all(|r| r["type"] == "opaque"),
        "no-cors responses are opaque to the page: {reports:?}"
    );
    (port, reports)
}

#[test]
fn cross_site_no_cors_posts_from_chromium_are_refused_by_origin() {
    let upstream = Upstream::start(free_port(), Transport::Streamable, false);
    let gateway = Gateway::start(free_port(), upstream.port);
    wait_listening(gateway.listen, Duration::from_secs(10));

    let (port, _) = cross_site(&format!("http://{}/mcp", gateway.listen), 2);

    let origin = format!("http://{EVIL_HOST}:{port}");
    let rejections = gateway.rejections();
    assert_eq!(
        rejections,
        vec![("origin".to_owned(), origin.clone()); 4],
        "every POST refused for its Origin"
    );
    assert_eq!(
        gateway.rejections_total("origin", &origin),
        4,
        "rejections_total{{reason=origin,origin={origin}}}"
    );
    assert_eq!(
        upstream.records(),
        Vec::<Value>::new(),
        "something reached the upstream"
    );
}

/// Control: the same page against the bare server. Its requests arrive, with the page's
/// Origin (the SDK then refuses the text/plain body no-cors forces, but a server that accepted
/// it would run the tool).
#[test]
fn control_cross_site_no_cors_posts_reach_a_bare_server() {
    let upstream = Upstream::start(free_port(), Transport::Streamable, false);

    let (port, _) = cross_site(&format!("http://127.0.0.1:{}/mcp", upstream.port), 2);

    let origin = format!("http://{EVIL_HOST}:{port}");
    let requests = upstream.requests();
    assert_eq!(requests.len(), 4, "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|r| r["method"] == "POST" && r["path"] == "/mcp" && r["origin"] == origin),
        "{requests:?}"
    );
}
