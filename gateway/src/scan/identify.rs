//! The probes of one socket, in order, within a budget of [`MAX_REQUESTS`]: find MCP on
//! `/mcp`, `/sse`, `/` and `/mcp/` (2026 `server/discover`, 2025 `initialize` with its session
//! ended by `DELETE`, the old SSE stream), then replay what answered with a foreign `Host`, then
//! with a foreign `Origin`. A socket whose first answer is not HTTP gets nothing more. With
//! `--deep`, a found server is also asked `tools/list` (never `tools/call`).
use std::net::SocketAddr;

use serde::Serialize;

use super::http::{Answer, Ask, FOREIGN_HOST, Mcp, Request, ServerInfo, mcp_answer, tool_names};

/// The most requests one socket gets.
pub const MAX_REQUESTS: usize = 8;

/// Sends one request (the real one is [`super::http::exchange`]; tests script answers).
#[allow(
    async_fn_in_trait,
    reason = "used inside this crate only, on one runtime: no Send bound needed"
)]
pub trait Exchange {
    async fn exchange(&mut self, request: &Request) -> Answer;
}

/// The socket the probes go to, counting what they send.
pub struct Prober<E> {
    ex: E,
    port: u16,
    /// `--deep`: list the tools of a found server.
    deep: bool,
    /// A Unix socket (`--unix`): `Host: localhost`, and no rebinding replays (no browser can
    /// reach a Unix socket).
    unix: bool,
    /// Every request sent, in order (for the report: never pretend).
    pub sent: Vec<String>,
}

/// How the MCP server was found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Found {
    pub path: &'static str,
    /// `2026-07-28` or `2025`.
    pub era: &'static str,
    /// `streamable-http` or `sse`.
    pub transport: &'static str,
    pub name: Option<String>,
    pub version: Option<String>,
    pub protocol_versions: Vec<String>,
    pub auth_required: bool,
    /// `--deep`: the tool names `tools/list` returned (`None`: not asked, or no list came back).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    #[serde(skip)]
    ask: Ask,
}

/// The outcome of one rebinding replay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Replay {
    /// The server answered as MCP: a rebinding page can drive it.
    Accepted,
    /// A 4xx: the server defends itself.
    Refused { status: u16 },
    /// Neither (with what happened).
    Inconclusive { detail: String },
    /// Not sent: the request budget ran out.
    NotTested,
}

/// What the probes of one socket found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per socket, moved a few times: boxing the found server would only add noise"
)]
pub enum Outcome {
    ConnectFailed(String),
    NoAnswer,
    ClosedEmpty,
    NotHttp,
    /// HTTP, but no MCP on any probed path.
    NotMcp,
    Mcp {
        found: Found,
        foreign_host: Replay,
        foreign_origin: Replay,
    },
}

impl<E: Exchange> Prober<E> {
    pub fn new(ex: E, port: u16, deep: bool) -> Self {
        Self {
            ex,
            port,
            deep,
            unix: false,
            sent: Vec::new(),
        }
    }

    /// Probes of a Unix socket.
    pub fn unix(ex: E, deep: bool) -> Self {
        Self {
            unix: true,
            ..Self::new(ex, 0, deep)
        }
    }

    fn local_host(&self) -> String {
        if self.unix {
            return "localhost".to_owned();
        }
        format!("127.0.0.1:{}", self.port)
    }

    fn foreign(&self) -> String {
        format!("{FOREIGN_HOST}:{}", self.port)
    }

    async fn send(
        &mut self,
        ask: Ask,
        path: &'static str,
        host: String,
        origin: Option<String>,
    ) -> Option<Answer> {
        if self.sent.len() >= MAX_REQUESTS {
            return None;
        }
        let request = Request {
            ask,
            path,
            host,
            origin,
        };
        let method = match request.ask {
            Ask::Discover => "POST server/discover",
            Ask::Initialize => "POST initialize",
            Ask::SseStream => "GET",
            Ask::EndSession(_) => "DELETE",
            Ask::ListTools { .. } => "POST tools/list",
        };
        let mut line = format!("{method} {} Host: {}", request.path, request.host);
        if let Some(origin) = &request.origin {
            line.push_str(&format!(" Origin: {origin}"));
        }
        self.sent.push(line);
        Some(self.ex.exchange(&request).await)
    }

    /// Ends the session an `initialize` answer opened (best effort: its answer is not judged).
    async fn end_session(&mut self, path: &'static str, mcp: &Mcp) {
        if let Mcp::Server(ServerInfo {
            session: Some(id), ..
        }) = mcp
        {
            let host = self.local_host();
            self.send(Ask::EndSession(id.clone()), path, host, None)
                .await;
        }
    }

    /// Every probe of the socket.
    pub async fn run(&mut self) -> Outcome {
        let tries: [(Ask, &'static str); 5] = [
            (Ask::Discover, "/mcp"),
            (Ask::Initialize, "/mcp"),
            (Ask::SseStream, "/sse"),
            (Ask::Initialize, "/"),
            (Ask::Initialize, "/mcp/"),
        ];
        let mut found = None;
        for (ask, path) in tries {
            let host = self.local_host();
            let Some(answer) = self.send(ask.clone(), path, host, None).await else {
                break;
            };
            let http = match answer {
                Answer::Http(http) => http,
                // Only the first request can meet these: later ones follow an HTTP answer.
                Answer::ConnectFailed(e) => return Outcome::ConnectFailed(e),
                Answer::NoAnswer => return Outcome::NoAnswer,
                Answer::ClosedEmpty => return Outcome::ClosedEmpty,
                Answer::NotHttp => return Outcome::NotHttp,
            };
            let mcp = mcp_answer(&http);
            let info = match &mcp {
                Mcp::Server(info) => Some(info.clone()),
                Mcp::SseEndpoint | Mcp::AuthRequired => Some(ServerInfo::default()),
                Mcp::Refused(_) | Mcp::Other(_) => None,
            };
            if let Some(info) = info {
                let tools = if self.deep && ask != Ask::SseStream && mcp != Mcp::AuthRequired {
                    self.list_tools(path, ask == Ask::Discover, info.session.clone())
                        .await
                } else {
                    None
                };
                self.end_session(path, &mcp).await;
                found = Some(Found {
                    path,
                    era: if ask == Ask::Discover {
                        "2026-07-28"
                    } else {
                        "2025"
                    },
                    transport: if ask == Ask::SseStream {
                        "sse"
                    } else {
                        "streamable-http"
                    },
                    name: info.name,
                    version: info.version,
                    protocol_versions: info.protocol_versions,
                    auth_required: mcp == Mcp::AuthRequired,
                    tools,
                    ask,
                });
                break;
            }
        }
        let Some(found) = found else {
            return Outcome::NotMcp;
        };
        if self.unix {
            return Outcome::Mcp {
                found,
                foreign_host: Replay::NotTested,
                foreign_origin: Replay::NotTested,
            };
        }
        let foreign = self.foreign();
        let foreign_host = self.replay(&found, foreign, None).await;
        let origin = format!("http://{}", self.foreign());
        let local = self.local_host();
        let foreign_origin = self.replay(&found, local, Some(origin)).await;
        Outcome::Mcp {
            found,
            foreign_host,
            foreign_origin,
        }
    }

    /// `--deep`: the found server's tool names, in its era (within its session, if any).
    async fn list_tools(
        &mut self,
        path: &'static str,
        era_2026: bool,
        session: Option<String>,
    ) -> Option<Vec<String>> {
        let host = self.local_host();
        let ask = Ask::ListTools { era_2026, session };
        match self.send(ask, path, host, None).await? {
            Answer::Http(http) => tool_names(&http),
            _ => None,
        }
    }

    async fn replay(&mut self, found: &Found, host: String, origin: Option<String>) -> Replay {
        let Some(answer) = self.send(found.ask.clone(), found.path, host, origin).await else {
            return Replay::NotTested;
        };
        let http = match answer {
            Answer::Http(http) => http,
            Answer::ConnectFailed(e) => {
                return Replay::Inconclusive {
                    detail: format!("connect failed: {e}"),
                };
            }
            other => {
                return Replay::Inconclusive {
                    detail: format!("{other:?}"),
                };
            }
        };
        let mcp = mcp_answer(&http);
        match mcp {
            Mcp::Server(_) | Mcp::SseEndpoint => {
                self.end_session(found.path, &mcp).await;
                Replay::Accepted
            }
            // Asked for credentials just as without the foreign header.
            Mcp::AuthRequired => Replay::Refused { status: 401 },
            Mcp::Refused(status) => Replay::Refused { status },
            Mcp::Other(status) => Replay::Inconclusive {
                detail: format!("status {status}"),
            },
        }
    }
}

/// The real exchange over a Unix socket: requests to `path`, each within `timeout`.
pub struct Unix {
    pub path: std::path::PathBuf,
    pub timeout: std::time::Duration,
}

impl Exchange for Unix {
    async fn exchange(&mut self, request: &Request) -> Answer {
        super::http::exchange_unix(&self.path, &request.to_bytes(), self.timeout).await
    }
}

/// A found server, for other modules' tests.
#[cfg(test)]
pub(crate) fn test_found() -> Found {
    Found {
        path: "/mcp",
        era: "2025",
        transport: "streamable-http",
        name: Some("w".into()),
        version: Some("1".into()),
        protocol_versions: vec!["2025-06-18".into()],
        auth_required: false,
        tools: None,
        ask: Ask::Initialize,
    }
}

/// The real exchange: requests to `to`, each within `timeout`.
pub struct Tcp {
    pub to: SocketAddr,
    pub timeout: std::time::Duration,
}

impl Exchange for Tcp {
    async fn exchange(&mut self, request: &Request) -> Answer {
        super::http::exchange(self.to, &request.to_bytes(), self.timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::http::HttpAnswer;

    /// Answers by a rule, recording every request.
    struct Scripted<F: FnMut(&Request) -> Answer> {
        rule: F,
        seen: Vec<Request>,
    }

    impl<F: FnMut(&Request) -> Answer> Exchange for Scripted<F> {
        async fn exchange(&mut self, request: &Request) -> Answer {
            self.seen.push(request.clone());
            (self.rule)(request)
        }
    }

    fn run<F: FnMut(&Request) -> Answer>(rule: F) -> (Outcome, Vec<Request>) {
        run_as(false, rule)
    }

    fn run_as<F: FnMut(&Request) -> Answer>(deep: bool, rule: F) -> (Outcome, Vec<Request>) {
        let mut prober = Prober::new(
            Scripted {
                rule,
                seen: Vec::new(),
            },
            8000,
            deep,
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let outcome = rt.block_on(prober.run());
        assert_eq!(prober.sent.len(), prober.ex.seen.len());
        (outcome, prober.ex.seen)
    }

    fn status(code: u16) -> Answer {
        Answer::Http(HttpAnswer {
            status: code,
            ..HttpAnswer::default()
        })
    }

    fn init_ok() -> Answer {
        Answer::Http(HttpAnswer {
            status: 200,
            headers: vec![("mcp-session-id".into(), "s1".into())],
            body: br#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","serverInfo":{"name":"w","version":"1"}}}"#.to_vec(),
        })
    }

    fn foreign(r: &Request) -> bool {
        r.host.starts_with(FOREIGN_HOST)
    }

    #[test]
    fn a_non_http_listener_gets_one_request() {
        for answer in [
            Answer::NotHttp,
            Answer::NoAnswer,
            Answer::ClosedEmpty,
            Answer::ConnectFailed("EPERM".into()),
        ] {
            let (_, seen) = run(|_| answer.clone());
            assert_eq!(seen.len(), 1, "{answer:?}");
        }
        assert_eq!(run(|_| Answer::NotHttp).0, Outcome::NotHttp);
        assert_eq!(run(|_| Answer::NoAnswer).0, Outcome::NoAnswer);
    }

    #[test]
    fn a_plain_web_server_is_not_mcp_after_five_requests() {
        let (outcome, seen) = run(|_| status(404));
        assert_eq!(outcome, Outcome::NotMcp);
        let paths: Vec<&str> = seen.iter().map(|r| r.path).collect();
        assert_eq!(paths, ["/mcp", "/mcp", "/sse", "/", "/mcp/"]);
    }

    #[test]
    fn an_unprotected_2025_server_is_found_replayed_and_its_sessions_ended() {
        let (outcome, seen) = run(|r| match (&r.ask, r.path) {
            (Ask::Discover, _) => status(400),
            (Ask::Initialize, "/mcp") => init_ok(),
            (Ask::EndSession(_), _) => status(200),
            _ => status(404),
        });
        let Outcome::Mcp {
            found,
            foreign_host,
            foreign_origin,
        } = outcome
        else {
            panic!("not found: {outcome:?}");
        };
        assert_eq!((found.path, found.era), ("/mcp", "2025"));
        assert_eq!(found.name.as_deref(), Some("w"));
        assert_eq!(foreign_host, Replay::Accepted);
        assert_eq!(foreign_origin, Replay::Accepted);
        // discover, initialize, DELETE, foreign Host + DELETE, foreign Origin + DELETE.
        assert_eq!(seen.len(), 7);
        let deletes = seen
            .iter()
            .filter(|r| matches!(r.ask, Ask::EndSession(_)))
            .count();
        assert_eq!(deletes, 3, "every session opened is ended");
        assert!(
            seen.iter()
                .all(|r| !matches!(r.ask, Ask::EndSession(_)) || !foreign(r))
        );
        assert!(
            seen[5]
                .origin
                .as_deref()
                .unwrap()
                .starts_with("http://rebind.mcp-gateway.invalid:")
        );
    }

    fn tools_ok(sse: bool) -> Answer {
        let json = r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"add","inputSchema":{}},{"name":"delete_all"},{"nameless":1}]}}"#;
        let (content_type, body) = if sse {
            (
                "text/event-stream",
                format!("event: message\r\ndata: {json}\r\n\r\n"),
            )
        } else {
            ("application/json", json.to_owned())
        };
        Answer::Http(HttpAnswer {
            status: 200,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into_bytes(),
        })
    }

    #[test]
    fn deep_lists_the_tools_within_the_session_and_never_calls_one() {
        for sse in [false, true] {
            let (outcome, seen) = run_as(true, |r| match (&r.ask, r.path) {
                (Ask::Discover, _) => status(400),
                (Ask::Initialize, "/mcp") => init_ok(),
                (Ask::ListTools { .. }, _) => tools_ok(sse),
                (Ask::EndSession(_), _) => status(200),
                _ => status(404),
            });
            let Outcome::Mcp { found, .. } = outcome else {
                panic!("not found");
            };
            assert_eq!(
                found.tools,
                Some(vec!["add".to_owned(), "delete_all".to_owned()])
            );
            // The list comes before the session is ended, within it, in the 2025 form.
            assert_eq!(
                seen[2].ask,
                Ask::ListTools {
                    era_2026: false,
                    session: Some("s1".into())
                }
            );
            assert_eq!(seen[3].ask, Ask::EndSession("s1".into()));
            let bytes: Vec<String> = seen
                .iter()
                .map(|r| String::from_utf8(r.to_bytes()).unwrap())
                .collect();
            assert!(bytes[2].contains("Mcp-Session-Id: s1"), "{}", bytes[2]);
            assert!(bytes.iter().all(|b| !b.contains("tools/call")));
            assert!(seen.len() <= MAX_REQUESTS);
        }
    }

    #[test]
    fn deep_asks_a_2026_server_in_its_own_form_and_survives_a_bad_list() {
        let discover = || {
            Answer::Http(HttpAnswer {
                status: 200,
                headers: vec![],
                body: br#"{"jsonrpc":"2.0","id":1,"result":{"supportedVersions":["2026-07-28"],"serverInfo":{"name":"new"}}}"#.to_vec(),
            })
        };
        let (outcome, seen) = run_as(true, |r| match &r.ask {
            Ask::Discover => discover(),
            Ask::ListTools { .. } => tools_ok(false),
            _ => status(404),
        });
        let Outcome::Mcp { found, .. } = outcome else {
            panic!("not found");
        };
        assert_eq!(found.tools.as_ref().map(Vec::len), Some(2));
        let list = String::from_utf8(seen[1].to_bytes()).unwrap();
        assert!(
            list.contains("Mcp-Method: tools/list")
                && list.contains("MCP-Protocol-Version: 2026-07-28")
                && list.contains("io.modelcontextprotocol/clientCapabilities"),
            "{list}"
        );
        // Garbage, an error and a refusal: no tools, and the scan goes on to the replays.
        for bad in [
            Answer::Http(HttpAnswer {
                status: 200,
                headers: vec![],
                body: b"not json".to_vec(),
            }),
            Answer::Http(HttpAnswer {
                status: 200,
                headers: vec![],
                body: br#"{"jsonrpc":"2.0","id":2,"error":{"code":-32601,"message":"no"}}"#
                    .to_vec(),
            }),
            status(403),
            Answer::NoAnswer,
        ] {
            let (outcome, _) = run_as(true, |r| match &r.ask {
                Ask::Discover => discover(),
                Ask::ListTools { .. } => bad.clone(),
                _ => status(404),
            });
            let Outcome::Mcp {
                found,
                foreign_host,
                ..
            } = outcome
            else {
                panic!("not found");
            };
            assert_eq!(found.tools, None, "{bad:?}");
            assert_ne!(foreign_host, Replay::NotTested, "{bad:?}");
        }
        // Without --deep, nothing is listed.
        let (_, seen) = run(|r| match &r.ask {
            Ask::Discover => discover(),
            _ => status(404),
        });
        assert!(seen.iter().all(|r| !matches!(r.ask, Ask::ListTools { .. })));
    }

    #[test]
    fn a_unix_socket_is_asked_with_localhost_and_never_replayed() {
        let mut prober = Prober::unix(
            Scripted {
                rule: |r: &Request| match r.ask {
                    Ask::Initialize => init_ok(),
                    Ask::EndSession(_) => status(200),
                    _ => status(404),
                },
                seen: Vec::new(),
            },
            false,
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let outcome = rt.block_on(prober.run());
        let Outcome::Mcp {
            foreign_host,
            foreign_origin,
            ..
        } = outcome
        else {
            panic!("not found: {outcome:?}");
        };
        assert_eq!(
            (foreign_host, foreign_origin),
            (Replay::NotTested, Replay::NotTested)
        );
        let seen = &prober.ex.seen;
        assert!(
            seen.iter()
                .all(|r| r.host == "localhost" && r.origin.is_none())
        );
        // discover, initialize, DELETE: nothing more.
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn a_protected_server_refuses_the_replays() {
        let (outcome, _) = run(|r| {
            if foreign(r) {
                status(421)
            } else if r.origin.is_some() {
                status(403)
            } else if r.ask == Ask::Initialize {
                init_ok()
            } else {
                status(400)
            }
        });
        let Outcome::Mcp {
            foreign_host,
            foreign_origin,
            ..
        } = outcome
        else {
            panic!("not found");
        };
        assert_eq!(foreign_host, Replay::Refused { status: 421 });
        assert_eq!(foreign_origin, Replay::Refused { status: 403 });
    }

    #[test]
    fn the_budget_holds_even_for_a_server_found_last() {
        // Found on /mcp/ (5 requests + DELETE), every replay accepted with a session to end.
        let (outcome, seen) = run(|r| match r.path {
            "/mcp/" => init_ok(),
            _ => status(404),
        });
        assert!(seen.len() <= MAX_REQUESTS, "{} requests", seen.len());
        let Outcome::Mcp { foreign_origin, .. } = outcome else {
            panic!("not found");
        };
        assert_eq!(foreign_origin, Replay::NotTested, "said, not pretended");
    }

    #[test]
    fn the_old_sse_transport_and_2026_discover_are_found() {
        let (outcome, seen) = run(|r| match (&r.ask, r.path) {
            (Ask::SseStream, "/sse") => Answer::Http(HttpAnswer {
                status: 200,
                headers: vec![("content-type".into(), "text/event-stream".into())],
                body: b"event: endpoint\r\ndata: /messages/?session_id=1\r\n\r\n".to_vec(),
            }),
            _ => status(404),
        });
        let Outcome::Mcp { found, .. } = outcome else {
            panic!("not found");
        };
        assert_eq!((found.path, found.transport), ("/sse", "sse"));
        assert_eq!(seen.len(), 5);
        let (outcome, _) = run(|r| {
            match r.ask {
            Ask::Discover => Answer::Http(HttpAnswer {
                status: 200,
                headers: vec![],
                body: br#"{"jsonrpc":"2.0","id":1,"result":{"supportedVersions":["2026-07-28"],"serverInfo":{"name":"new"}}}"#.to_vec(),
            }),
            _ => status(404),
        }
        });
        let Outcome::Mcp { found, .. } = outcome else {
            panic!("not found");
        };
        assert_eq!(found.era, "2026-07-28");
    }

    #[test]
    fn a_server_that_stops_answering_mid_test_is_inconclusive() {
        let mut n = 0;
        let (outcome, _) = run(move |_| {
            n += 1;
            if n <= 2 { init_ok() } else { Answer::NoAnswer }
        });
        let Outcome::Mcp { foreign_host, .. } = outcome else {
            panic!("not found");
        };
        assert!(matches!(foreign_host, Replay::Inconclusive { .. }));
    }
}
