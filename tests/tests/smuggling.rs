//! HTTP/1.1 framing and request-smuggling attacks against the real gateway binary, in front of
//! real upstream parsers: uvicorn with h11 and with httptools (what Python SDK servers run on),
//! and Node's `http` server.
//!
//! Every case is raw bytes on one fresh connection. Its hidden part (a request for
//! `/smuggled` with `Host: attacker.example` and an `X-Smuggled` header) must never reach an
//! upstream through the gateway, and malformed framing must get a 4xx. Each case also runs
//! direct against each upstream, to show which parsers the hidden request would have reached
//! without the gateway: the printed table is the corpus's evidence.
//!
//! The first run on a fresh machine installs the pinned Python packages (tests/e2e/.venv).
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    thread,
    time::{Duration, Instant},
};

use mcp_gateway_tests::{
    e2e::{Gateway, free_port, wait_listening},
    smuggling::{Outcome, Parser, Record, Recorder, exchange, parse_response},
};

/// The legitimate MCP message every carrier POSTs.
const BODY: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
/// The authority hidden requests are for: the gateway must never let it through.
const HOSTILE: &str = "attacker.example";
/// The path of every hidden request.
const MARKER: &str = "/smuggled";
/// How long a connection may stay silent before its case is over.
const IDLE: Duration = Duration::from_millis(1500);

use Expect::{Forbidden, Refused, ServedThenForbidden};

/// What the gateway must answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Malformed framing: every answer is a 4xx (at least one), and nothing reaches the upstream.
    Refused,
    /// A hostile request on its own: 403 first, any later answer a 4xx; nothing reaches the
    /// upstream.
    Forbidden,
    /// A well-formed carrier then a hostile request: exactly 200 (the carrier, forwarded) then
    /// 403 (the hostile one, not forwarded).
    ServedThenForbidden,
}

impl Expect {
    /// How many requests of the case may reach the upstream (each the carrier).
    fn forwarded(self) -> usize {
        match self {
            Refused | Forbidden => 0,
            ServedThenForbidden => 1,
        }
    }
}

/// The connection a case is built for.
struct Ctx {
    /// The `Host` the gateway allows (its own address).
    host: String,
    case: &'static str,
}

impl Ctx {
    /// The carrier: an allowed MCP POST with `framing` (header lines, each with its own line
    /// end), then `body` as is.
    fn post(&self, framing: &str, body: &str) -> String {
        self.post_host(&format!("Host: {}\r\n", self.host), framing, body)
    }

    /// [`Ctx::post`] with `host` as the Host line(s).
    fn post_host(&self, host: &str, framing: &str, body: &str) -> String {
        format!(
            "POST /mcp?case={case} HTTP/1.1\r\n{host}X-Case: {case}\r\n\
             Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
             {framing}\r\n{body}",
            case = self.case
        )
    }

    /// The carrier framed by a correct `Content-Length`.
    fn post_cl(&self, extra: &str) -> String {
        self.post(&format!("{extra}Content-Length: {}\r\n", BODY.len()), BODY)
    }

    /// The hidden request: a rebinding page's request, as it would reach the upstream.
    fn hidden(&self) -> String {
        format!(
            "GET {MARKER}?case={case} HTTP/1.1\r\nHost: {HOSTILE}\r\nX-Case: {case}\r\n\
             X-Smuggled: 1\r\nConnection: close\r\n\r\n",
            case = self.case
        )
    }

    /// CL.TE: `Content-Length` covers everything, the `te` line(s) say chunked; a parser that
    /// honours them reads the MCP message, then the hidden request as the next one.
    fn cl_te(&self, te: &str) -> Vec<u8> {
        let body = format!("{}{}", chunked(BODY), self.hidden());
        self.post(&format!("Content-Length: {}\r\n{te}", body.len()), &body)
            .into_bytes()
    }

    /// TE.CL: the `te` line(s) say chunked, with the hidden request as chunk data;
    /// `Content-Length` covers only the chunk-size line, so a parser that ignores the
    /// Transfer-Encoding reads the hidden request as the next one.
    fn te_cl(&self, te: &str) -> Vec<u8> {
        let (framing, body) = self.te_cl_framing(te);
        self.post(&framing, &body).into_bytes()
    }

    /// The framing lines and body of [`Ctx::te_cl`].
    fn te_cl_framing(&self, te: &str) -> (String, String) {
        let hidden = self.hidden();
        let size = format!("{:x}\r\n", hidden.len());
        let body = format!("{size}{hidden}\r\n0\r\n\r\n");
        (format!("{te}Content-Length: {}\r\n", size.len()), body)
    }

    /// A chunked carrier whose body is `chunks` as written, pipelined with the hidden request.
    fn chunked_then_hidden(&self, chunks: &str) -> Vec<u8> {
        let body = format!("{chunks}{}", self.hidden());
        self.post("Transfer-Encoding: chunked\r\n", &body)
            .into_bytes()
    }

    /// The carrier with `Content-Length: cl` (as written) and the hidden request right after
    /// the MCP message: a parser that takes the message's length reads it next.
    fn cl_then_hidden(&self, cl: &str) -> Vec<u8> {
        let body = format!("{BODY}{}", self.hidden());
        self.post(cl, &body).into_bytes()
    }
}

/// One chunk of `data`.
fn chunk(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n", data.len())
}

/// `data` as a whole chunked body.
fn chunked(data: &str) -> String {
    format!("{}0\r\n\r\n", chunk(data))
}

struct Case {
    name: &'static str,
    /// The attack, in one line.
    attack: &'static str,
    expect: Expect,
    /// Shut the write side after the last write (the client gives up sending).
    half_close: bool,
    /// The writes, each sent once the ones before it were answered.
    build: fn(&Ctx) -> Vec<Vec<u8>>,
}

const fn case(
    name: &'static str,
    attack: &'static str,
    expect: Expect,
    build: fn(&Ctx) -> Vec<Vec<u8>>,
) -> Case {
    Case {
        name,
        attack,
        expect,
        half_close: false,
        build,
    }
}

const CASES: &[Case] = &[
    // Content-Length against Transfer-Encoding. RFC 9112 §6.3 lets a server read such a request
    // by its Transfer-Encoding and close after answering, but the issue asks for a 4xx: a
    // message framed two ways is refused, whichever way the gateway would read it.
    case(
        "cl_te",
        "CL.TE: Content-Length spans the hidden request, chunked framing ends before it",
        Refused,
        |c| vec![c.cl_te("Transfer-Encoding: chunked\r\n")],
    ),
    case(
        "te_cl",
        "TE.CL: chunk data is the hidden request, Content-Length ends before it",
        Refused,
        |c| vec![c.te_cl("Transfer-Encoding: chunked\r\n")],
    ),
    // The MCP check refuses `te_cl`'s carrier whatever its framing (its body, read as chunked,
    // is not JSON); the same bytes to a path whose body the gateway does not inspect show the
    // framing verdict alone.
    case(
        "te_cl_unchecked_path",
        "TE.CL as `te_cl`, POSTed as application/octet-stream to a non-MCP path",
        Refused,
        |c| {
            let (framing, body) = c.te_cl_framing("Transfer-Encoding: chunked\r\n");
            vec![
                format!(
                    "POST /upload?case={case} HTTP/1.1\r\nHost: {}\r\nX-Case: {case}\r\n\
                     Content-Type: application/octet-stream\r\n{framing}\r\n{body}",
                    c.host,
                    case = c.case
                )
                .into_bytes(),
            ]
        },
    ),
    case(
        "te_xchunked",
        "CL.TE with `Transfer-Encoding: xchunked`, an unknown coding a sloppy parser reads as chunked",
        Refused,
        |c| vec![c.cl_te("Transfer-Encoding: xchunked\r\n")],
    ),
    case(
        "te_cl_xchunked",
        "TE.CL with `xchunked`: a parser that ignores the unknown coding falls back to Content-Length",
        Refused,
        |c| vec![c.te_cl("Transfer-Encoding: xchunked\r\n")],
    ),
    case(
        "te_space_prefixed_line",
        "CL.TE with ` Transfer-Encoding: chunked` (leading space: a continuation line to strict parsers)",
        Refused,
        |c| vec![c.cl_te("X-Pad: a\r\n Transfer-Encoding: chunked\r\n")],
    ),
    case(
        "te_chunked_identity",
        "CL.TE with `Transfer-Encoding: chunked, identity` (chunked not last: the length is unknown)",
        Refused,
        |c| vec![c.cl_te("Transfer-Encoding: chunked, identity\r\n")],
    ),
    case(
        "te_tab",
        "CL.TE with `Transfer-Encoding:\\tchunked` (tab as whitespace)",
        Refused,
        |c| vec![c.cl_te("Transfer-Encoding:\tchunked\r\n")],
    ),
    case(
        "te_duplicate",
        "CL.TE with two Transfer-Encoding headers, `chunked` then `identity` (first-wins vs last-wins)",
        Refused,
        |c| vec![c.cl_te("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n")],
    ),
    case(
        "te_space_before_colon",
        "CL.TE with `Transfer-Encoding : chunked` (space before the colon)",
        Refused,
        |c| vec![c.cl_te("Transfer-Encoding : chunked\r\n")],
    ),
    case(
        "te_uppercase",
        "CL.TE with `TRANSFER-ENCODING: CHUNKED` (case variants)",
        Refused,
        |c| vec![c.cl_te("TRANSFER-ENCODING: CHUNKED\r\n")],
    ),
    case(
        "te_http10",
        "CL.TE on an HTTP/1.0 request, which has no chunked coding",
        Refused,
        |c| {
            let bytes = String::from_utf8(c.cl_te("Transfer-Encoding: chunked\r\n")).unwrap();
            vec![
                bytes
                    .replacen(" HTTP/1.1\r\n", " HTTP/1.0\r\n", 1)
                    .into_bytes(),
            ]
        },
    ),
    // Content-Length against itself.
    case(
        "cl_duplicate",
        "two Content-Length headers: the message's length, then one spanning the hidden request",
        Refused,
        |c| {
            let n = BODY.len();
            let all = n + c.hidden().len();
            vec![c.cl_then_hidden(&format!("Content-Length: {n}\r\nContent-Length: {all}\r\n"))]
        },
    ),
    case(
        "cl_list_same",
        "list-valued `Content-Length: N, N`, the hidden request right after N bytes",
        Refused,
        |c| {
            let n = BODY.len();
            vec![c.cl_then_hidden(&format!("Content-Length: {n}, {n}\r\n"))]
        },
    ),
    case(
        "cl_list_differing",
        "list-valued `Content-Length: N, M`: the message's length, and one spanning the hidden request",
        Refused,
        |c| {
            let n = BODY.len();
            let all = n + c.hidden().len();
            vec![c.cl_then_hidden(&format!("Content-Length: {n}, {all}\r\n"))]
        },
    ),
    case(
        "cl_signed",
        "`Content-Length: +N`: a sign some number parsers accept",
        Refused,
        |c| vec![c.cl_then_hidden(&format!("Content-Length: +{}\r\n", BODY.len()))],
    ),
    // Line folding, line ends and control characters.
    case(
        "obs_fold_host",
        "obs-fold: `Host: <allowed>` continued on the next line with ` attacker.example`",
        Refused,
        |c| {
            let host = format!("Host: {}\r\n {HOSTILE}\r\n", c.host);
            vec![
                c.post_host(&host, &format!("Content-Length: {}\r\n", BODY.len()), BODY)
                    .into_bytes(),
            ]
        },
    ),
    case(
        "obs_fold_te",
        "CL.TE with `Transfer-Encoding:` folded onto a continuation line ` chunked`",
        Refused,
        |c| vec![c.cl_te("Transfer-Encoding:\r\n chunked\r\n")],
    ),
    case(
        "obs_fold_cl",
        "`Content-Length:` folded onto a continuation line, the hidden request after the message",
        Refused,
        |c| vec![c.cl_then_hidden(&format!("Content-Length:\r\n {}\r\n", BODY.len()))],
    ),
    case(
        "bare_lf_te",
        "CL.TE with the Transfer-Encoding line behind a bare LF inside another header's value",
        Refused,
        |c| vec![c.cl_te("X-Pad: a\nTransfer-Encoding: chunked\r\n")],
    ),
    case(
        "bare_lf_host",
        "a second `Host: attacker.example` behind a bare LF inside another header's value",
        Refused,
        |c| {
            vec![
                c.post_cl(&format!("X-Pad: a\nHost: {HOSTILE}\r\n"))
                    .into_bytes(),
            ]
        },
    ),
    // RFC 9112 §2.2 lets a recipient take a bare LF as a line end; the gateway does, and
    // re-frames what it forwards, so the hidden request is simply the next one: refused.
    case(
        "bare_lf_lines",
        "carrier and pipelined hidden request with bare LF line ends throughout",
        ServedThenForbidden,
        |c| {
            let both = format!("{}{}", c.post_cl(""), c.hidden());
            vec![both.replace("\r\n", "\n").into_bytes()]
        },
    ),
    case(
        "nul_in_te",
        "CL.TE with `Transfer-Encoding: chunked\\0` (a C-string parser stops at the NUL)",
        Refused,
        |c| vec![c.cl_te("Transfer-Encoding: chunked\0\r\n")],
    ),
    case(
        "nul_in_cl",
        "`Content-Length: N\\0M`: a C-string parser reads N and the hidden request next",
        Refused,
        |c| vec![c.cl_then_hidden(&format!("Content-Length: {}\x009\r\n", BODY.len()))],
    ),
    case(
        "cr_in_value",
        "CL.TE with the Transfer-Encoding line behind a bare CR inside another header's value",
        Refused,
        |c| vec![c.cl_te("X-Pad: a\rTransfer-Encoding: chunked\r\n")],
    ),
    // Chunked framing tricks (no Content-Length).
    case(
        "chunk_extensions",
        "well-formed chunk extensions (`;name=value;q=\"a;b\"`), the hidden request pipelined after",
        ServedThenForbidden,
        |c| {
            let chunks = format!(
                "{:x};name=value;q=\"a;b\"\r\n{BODY}\r\n0;last\r\n\r\n",
                BODY.len()
            );
            vec![c.chunked_then_hidden(&chunks)]
        },
    ),
    case(
        "chunk_extension_lf",
        "a bare LF ends a chunk extension (TERM.EXT): lenient parsers end the size line there",
        Refused,
        |c| {
            let chunks = format!("{:x};ext\n{BODY}\r\n0\r\n\r\n", BODY.len());
            vec![c.chunked_then_hidden(&chunks)]
        },
    ),
    case(
        "chunk_size_invalid_hex",
        "a chunk size that is not hex (`zz`)",
        Refused,
        |c| vec![c.chunked_then_hidden(&format!("zz\r\n{BODY}\r\n0\r\n\r\n"))],
    ),
    case(
        "chunk_size_0x",
        "a chunk size with a `0x` prefix",
        Refused,
        |c| vec![c.chunked_then_hidden(&format!("0x{:x}\r\n{BODY}\r\n0\r\n\r\n", BODY.len()))],
    ),
    case(
        "chunk_size_overflow",
        "a chunk size of 2^64 (17 hex digits): wraps to 0 in a 64-bit parser without checks",
        Refused,
        |c| vec![c.chunked_then_hidden(&format!("10000000000000000\r\n{BODY}\r\n0\r\n\r\n"))],
    ),
    Case {
        half_close: true,
        ..case(
            "chunk_size_oversized",
            "a 4 GiB chunk size (over the body cap) swallowing the hidden request, then the client stops",
            Refused,
            |c| vec![c.chunked_then_hidden(&format!("ffffffff\r\n{BODY}\r\n0\r\n\r\n"))],
        )
    },
    case(
        "chunk_missing_crlf",
        "chunk data not followed by CRLF: the last-chunk line runs into it",
        Refused,
        |c| vec![c.chunked_then_hidden(&format!("{:x}\r\n{BODY}0\r\n\r\n", BODY.len()))],
    ),
    case(
        "chunk_bare_lf",
        "chunk-size lines and chunk ends with bare LF",
        Refused,
        |c| vec![c.chunked_then_hidden(&format!("{:x}\n{BODY}\n0\n\n", BODY.len()))],
    ),
    // Leaving HTTP/1.1: upgrades and tunnels. The hidden request is sent once the first
    // answer is in, as it would be on a tunnel.
    case(
        "upgrade_h2c",
        "h2c upgrade (`Upgrade: h2c`, `HTTP2-Settings`) on the carrier, then the hidden request",
        ServedThenForbidden,
        |c| {
            vec![
                c.post_cl(
                    "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
                     HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
                )
                .into_bytes(),
                c.hidden().into_bytes(),
            ]
        },
    ),
    case(
        "upgrade_websocket",
        "WebSocket upgrade on the carrier, then the hidden request",
        ServedThenForbidden,
        |c| {
            vec![
                c.post_cl(
                    "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
                )
                .into_bytes(),
                c.hidden().into_bytes(),
            ]
        },
    ),
    case(
        "connect_hostile",
        "`CONNECT attacker.example:443` with a matching Host, then the hidden request",
        Forbidden,
        |c| {
            vec![
                format!(
                    "CONNECT {HOSTILE}:443 HTTP/1.1\r\nHost: {HOSTILE}:443\r\nX-Case: {}\r\n\r\n",
                    c.case
                )
                .into_bytes(),
                c.hidden().into_bytes(),
            ]
        },
    ),
    case(
        "connect_allowed_host",
        "`CONNECT attacker.example:443` with an allowed Host, then the hidden request",
        Forbidden,
        |c| {
            vec![
                format!(
                    "CONNECT {HOSTILE}:443 HTTP/1.1\r\nHost: {}\r\nX-Case: {}\r\n\r\n",
                    c.host, c.case
                )
                .into_bytes(),
                c.hidden().into_bytes(),
            ]
        },
    ),
    case(
        "connect_own_authority",
        "`CONNECT` to the gateway's own authority (a tunnel past the policy), then the hidden request",
        Refused,
        |c| {
            vec![
                format!(
                    "CONNECT {host} HTTP/1.1\r\nHost: {host}\r\nX-Case: {}\r\n\r\n",
                    c.case,
                    host = c.host
                )
                .into_bytes(),
                c.hidden().into_bytes(),
            ]
        },
    ),
    case(
        "absolute_form",
        "absolute-form target `http://attacker.example/...` with an allowed Host",
        Forbidden,
        |c| {
            vec![
                format!(
                    "GET http://{HOSTILE}{MARKER}?case={case} HTTP/1.1\r\nHost: {}\r\n\
                     X-Case: {case}\r\nConnection: close\r\n\r\n",
                    c.host,
                    case = c.case
                )
                .into_bytes(),
            ]
        },
    ),
    // Several requests on one connection.
    case(
        "pipelined",
        "the carrier and the hidden request pipelined in one write",
        ServedThenForbidden,
        |c| vec![format!("{}{}", c.post_cl(""), c.hidden()).into_bytes()],
    ),
    case(
        "keep_alive",
        "a keep-alive connection: the carrier, its answer, then the hidden request",
        ServedThenForbidden,
        |c| vec![c.post_cl("").into_bytes(), c.hidden().into_bytes()],
    ),
];

/// Where a case's bytes went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Route {
    Direct,
    Gateway,
}

/// One upstream parser: a recorder reached directly, another behind its own gateway.
struct Target {
    parser: Parser,
    direct: Recorder,
    gated: Recorder,
    gateway: Gateway,
}

impl Target {
    fn start(parser: Parser) -> Self {
        let direct = Recorder::start(parser);
        let gated = Recorder::start(parser);
        let upstream = format!("http://{}/mcp", gated.addr);
        let gateway = Gateway::start_url(free_port(), &upstream, &["--ebpf", "off"], None);
        wait_listening(gateway.listen, Duration::from_secs(10));
        Self {
            parser,
            direct,
            gated,
            gateway,
        }
    }

    fn addr(&self, route: Route) -> SocketAddr {
        match route {
            Route::Direct => self.direct.addr,
            Route::Gateway => self.gateway.listen,
        }
    }
}

/// A case's requests as one recorder saw them.
fn of_case<'a>(records: &'a [Record], case: &str) -> Vec<&'a Record> {
    records.iter().filter(|r| r.case() == Some(case)).collect()
}

fn hidden(records: &[&Record]) -> bool {
    records.iter().any(|r| r.is_hidden(MARKER, HOSTILE))
}

/// What is wrong with the gateway's handling of `case`, given what it answered and which of
/// the case's requests reached the upstream.
fn problems(case: &Case, outcome: &Outcome, reached: &[&Record]) -> Vec<String> {
    let mut problems = Vec::new();
    for r in reached.iter().filter(|r| r.is_hidden(MARKER, HOSTILE)) {
        problems.push(format!(
            "hidden request reached the upstream: {}",
            r.summary()
        ));
    }
    let carrier =
        |r: &&&Record| r.method == "POST" && r.target == format!("/mcp?case={}", case.name);
    for r in reached
        .iter()
        .filter(|r| !carrier(r) && !r.is_hidden(MARKER, HOSTILE))
    {
        problems.push(format!(
            "unexpected request reached the upstream: {}",
            r.summary()
        ));
    }
    if reached.len() > case.expect.forwarded() {
        problems.push(format!(
            "{} request(s) reached the upstream, the case allows {}",
            reached.len(),
            case.expect.forwarded()
        ));
    }
    let statuses = outcome.statuses();
    let client_error = |s: &u16| (400..=499).contains(s);
    let answered = match case.expect {
        Refused => !statuses.is_empty() && statuses.iter().all(client_error),
        Forbidden => statuses.first() == Some(&403) && statuses.iter().skip(1).all(client_error),
        ServedThenForbidden => statuses == [200, 403],
    };
    if !answered {
        problems.push(format!(
            "expected {:?}, the gateway answered {}",
            case.expect,
            outcome.describe()
        ));
    }
    if !outcome.trailing.is_empty() {
        problems.push(format!(
            "bytes after the last response: {:?}",
            String::from_utf8_lossy(&outcome.trailing)
        ));
    }
    problems
}

#[test]
fn no_hidden_request_reaches_an_upstream_and_malformed_framing_gets_a_4xx() {
    let started = Instant::now();
    let targets: Vec<Target> = thread::scope(|s| {
        let starting: Vec<_> = Parser::ALL
            .iter()
            .map(|&p| s.spawn(move || Target::start(p)))
            .collect();
        starting
            .into_iter()
            .map(|t| t.join().expect("starting an upstream"))
            .collect()
    });
    let ready = started.elapsed();

    // Every case on every route at once: each waits on its own connection, mostly idle.
    let outcomes: BTreeMap<(usize, usize, Route), Outcome> = thread::scope(|s| {
        let mut running = Vec::new();
        for (c, case) in CASES.iter().enumerate() {
            for (t, target) in targets.iter().enumerate() {
                let ctx = Ctx {
                    host: format!("127.0.0.1:{}", target.gateway.listen.port()),
                    case: case.name,
                };
                let writes = (case.build)(&ctx);
                for route in [Route::Direct, Route::Gateway] {
                    let (addr, writes) = (target.addr(route), writes.clone());
                    running.push((
                        (c, t, route),
                        s.spawn(move || exchange(addr, &writes, case.half_close, IDLE)),
                    ));
                }
            }
        }
        running
            .into_iter()
            .map(|(key, h)| (key, h.join().expect("a case's connection")))
            .collect()
    });
    // A request still on its way through the gateway is recorded before it is answered; give
    // one that was not answered a moment to land too.
    thread::sleep(Duration::from_millis(500));
    let direct: Vec<Vec<Record>> = targets.iter().map(|t| t.direct.records()).collect();
    let gated: Vec<Vec<Record>> = targets.iter().map(|t| t.gated.records()).collect();

    let mut failures = Vec::new();
    let mut table = vec![format!(
        "{:<24} {:<18} {:<8} {:<16} {:<8} {:<16} {}",
        "case", "upstream", "direct", "direct answer", "gateway", "gateway answer", "verdict"
    )];
    let mut reached_directly = Vec::new();
    for (c, case) in CASES.iter().enumerate() {
        for (t, target) in targets.iter().enumerate() {
            let direct_seen = of_case(&direct[t], case.name);
            let gated_seen = of_case(&gated[t], case.name);
            let via_gateway = &outcomes[&(c, t, Route::Gateway)];
            let problems = problems(case, via_gateway, &gated_seen);
            // Pipelining reaches any upstream: only malformed framing shows a parser's flaw.
            if hidden(&direct_seen) && case.expect == Refused {
                reached_directly.push(format!("{} -> {}", case.name, target.parser.name()));
            }
            let yes_no = |b: bool| if b { "HIDDEN" } else { "no" };
            table.push(format!(
                "{:<24} {:<18} {:<8} {:<16} {:<8} {:<16} {}",
                case.name,
                target.parser.name(),
                yes_no(hidden(&direct_seen)),
                outcomes[&(c, t, Route::Direct)].describe(),
                yes_no(hidden(&gated_seen)),
                via_gateway.describe(),
                if problems.is_empty() { "ok" } else { "FAIL" }
            ));
            for p in problems {
                failures.push(format!(
                    "{} via gateway to {} ({}): {p}",
                    case.name,
                    target.parser.name(),
                    case.attack
                ));
            }
        }
    }
    // Anything the gated upstreams saw that no case claims is a leak too.
    for (t, records) in gated.iter().enumerate() {
        for r in records
            .iter()
            .filter(|r| !r.case().is_some_and(|c| CASES.iter().any(|k| k.name == c)))
        {
            failures.push(format!(
                "{} behind the gateway saw a request of no case: {}",
                targets[t].parser.name(),
                r.summary()
            ));
        }
    }
    println!("{}", table.join("\n"));
    println!(
        "upstreams ready in {ready:?}, all cases done in {:?}",
        started.elapsed()
    );
    for (t, records) in direct.iter().enumerate() {
        for r in records.iter().filter(|r| r.case().is_none()) {
            println!(
                "{} directly: a request of no case: {}",
                targets[t].parser.name(),
                r.summary()
            );
        }
    }
    println!(
        "malformed framing that reached an upstream directly: {}",
        reached_directly.join(", ")
    );

    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}\n\n{}",
        failures.len(),
        failures.join("\n"),
        table.join("\n")
    );
    // Without the gateway some malformed framing does smuggle the hidden request into a real
    // parser: the corpus tests something.
    assert!(
        !reached_directly.is_empty(),
        "no malformed case's hidden request reached any upstream directly: the corpus proves \
         nothing\n{}",
        table.join("\n")
    );
}

/// The response splitter the cases rely on: pipelined responses of every framing.
#[test]
fn responses_are_split_by_their_framing() {
    let wire = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}\
        HTTP/1.1 403 Forbidden\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
        HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\nbye";
    let (first, n) = parse_response(wire, false).unwrap();
    assert_eq!((first.status, &first.body[..]), (200, &b"{}"[..]));
    let (second, m) = parse_response(&wire[n..], false).unwrap();
    assert_eq!((second.status, &second.body[..]), (403, &b"abc"[..]));
    assert!(
        parse_response(&wire[n + m..], false).is_none(),
        "a body without length ends at EOF"
    );
    let (third, _) = parse_response(&wire[n + m..], true).unwrap();
    assert_eq!((third.status, &third.body[..]), (400, &b"bye"[..]));
    assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab", true).is_none());
    assert!(parse_response(b"garbage\r\n\r\n", true).is_none());
}

/// What makes a recorded request hidden, and which case it belongs to.
#[test]
fn hidden_requests_are_recognised() {
    let rec = |method: &str, target: &str, headers: &[(&str, &str)]| Record {
        method: method.into(),
        target: target.into(),
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
    };
    let carrier = rec("POST", "/mcp?case=cl_te", &[("host", "127.0.0.1:1")]);
    assert_eq!(carrier.case(), Some("cl_te"));
    assert!(!carrier.is_hidden(MARKER, HOSTILE));
    let connect = rec("CONNECT", "attacker.example:443", &[("x-case", "connect")]);
    assert_eq!(connect.case(), Some("connect"));
    for hidden in [
        connect,
        rec("GET", "/smuggled?case=x", &[]),
        rec("POST", "/mcp", &[("host", "attacker.example")]),
        rec(
            "POST",
            "/mcp",
            &[("x-forwarded-host", "attacker.example:80")],
        ),
        rec("POST", "/mcp", &[("x-smuggled", "1")]),
        rec("GET", "http://attacker.example/", &[]),
    ] {
        assert!(hidden.is_hidden(MARKER, HOSTILE), "{hidden:?}");
    }
}
