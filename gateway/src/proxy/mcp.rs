//! The MCP layer of the request path.
//!
//! Requests: a POSTed MCP message (see `mcp::scope` for which) is read whole, within the body
//! cap, and checked before anything is forwarded: content type (415), JSON-RPC (400, -32700 or
//! -32600), 2026-07-28 headers against the body (400, -32020), method and tool allowlists
//! (403, with the request's id). Responses: a `tools/list` answer is filtered (JSON buffered,
//! SSE event by event), and a legacy SSE stream's `endpoint` event teaches the server's message
//! path; everything else streams untouched.
//!
//! The deprecated HTTP+SSE transport answers every message on the session's SSE stream, not on
//! the POST (which gets `202 Accepted`), and some clients treat any other status of that POST as
//! the end of the session. So a refused message POSTed to a session the gateway saw open is
//! answered the way that transport answers: 202, and the JSON-RPC error on the session's stream.
use std::{
    collections::{HashMap, VecDeque},
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use bytes::Bytes;
use gateway_common::Reason;
use http::{Method, Response, StatusCode, header};
use hyper::body::{Body as HttpBody, Frame, Incoming};
use tokio::sync::mpsc;

use super::{
    Ctx, Gateway,
    body::{self, Body, BoxError, ReadError},
    forward::Outgoing,
    refusal::{Refusal, Refused},
    reply,
};
use crate::mcp::{
    McpPolicy,
    allow::Refusal as AllowRefusal,
    filter, headers,
    message::{self, Kind},
    scope::{self, Paths},
    sse,
};

/// Largest `tools/list` answer the gateway reads to filter (bigger: 502, never unfiltered).
pub const MAX_FILTERED_BYTES: usize = 16 * 1024 * 1024;
/// Largest first event of a stream read to learn the legacy message path.
const MAX_ENDPOINT_EVENT: usize = 64 * 1024;
/// Most legacy SSE sessions tracked per server (further ones get 403 refusals).
const MAX_LEGACY_STREAMS: usize = 1024;

/// The open legacy HTTP+SSE streams of a server, by the message URL (path and query) their
/// `endpoint` event announced: where refusals of messages POSTed there are delivered.
#[derive(Debug, Default)]
pub struct LegacyStreams(Mutex<HashMap<String, mpsc::Sender<Bytes>>>);

impl LegacyStreams {
    fn register(&self, target: &str) -> Option<mpsc::Receiver<Bytes>> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_LEGACY_STREAMS {
            return None;
        }
        let (tx, rx) = mpsc::channel(16);
        map.insert(target.to_owned(), tx);
        Some(rx)
    }

    fn unregister(&self, target: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(target);
    }

    /// Queues `event` on the stream of `target`; `false` when no such stream is open.
    pub(super) fn deliver(&self, target: &str, event: Bytes) -> bool {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(target).is_some_and(|tx| tx.try_send(event).is_ok())
    }
}

/// What the request layer learned that the response layer needs.
#[derive(Debug, Default)]
pub struct Inspection {
    /// A `tools/list` answer is expected: filter it.
    pub filter_tools: bool,
    /// A stream from an MCP path: learn its `endpoint` event, filter tools results in it.
    pub stream: bool,
}

impl Inspection {
    /// Whether the upstream must answer uncompressed (the gateway reads the answer).
    pub fn reads_response(&self) -> bool {
        self.filter_tools || self.stream
    }
}

impl Gateway {
    /// Reads and checks the MCP message a request carries: the body to forward, or the refusal.
    pub(super) async fn inspect(
        &self,
        ctx: &mut Ctx,
        body: Incoming,
    ) -> Result<(Outgoing, Inspection), Refused> {
        let (parts, call) = (&ctx.parts, &mut ctx.call);
        let mcp_path = self.paths.contains(parts.uri.path());
        if parts.method == Method::GET && mcp_path {
            let stream = Inspection {
                stream: true,
                ..Inspection::default()
            };
            return Ok((Outgoing::Streamed(body), stream));
        }
        if parts.method != Method::POST {
            return Ok((Outgoing::Streamed(body), Inspection::default()));
        }
        let unsupported = |why: &str| Refusal::Invalid {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: reply::SERVER_ERROR,
            why: why.to_owned(),
            id: None,
        };
        const JSON_ONLY: &str =
            "Unsupported media type: MCP messages are POSTed as Content-Type: application/json";
        let json = scope::is_json(&parts.headers);
        let unread = if scope::is_encoded(&parts.headers) {
            Some(unsupported(
                "Unsupported media type: compressed request bodies are not accepted",
            ))
        } else if mcp_path && !json {
            // The endpoint takes JSON only: refused before a byte of the body is read.
            call.unreadable(0);
            Some(unsupported(JSON_ONLY))
        } else {
            None
        };
        if let Some(refusal) = unread {
            let unread = Some(body);
            return Err(Refused { refusal, unread });
        }
        let bytes = match body::read_all(body, self.limits.max_body_bytes).await {
            Ok(bytes) => bytes,
            Err(ReadError::TooLarge) => return Err(self.too_large().into()),
            Err(ReadError::Client(why)) => return Err(Refusal::BrokenBody(why).into()),
        };
        if !mcp_path && !scope::looks_like_jsonrpc(&bytes) {
            // Not an MCP message (an OAuth form, a registration request): as it came.
            return Ok((Outgoing::Buffered(bytes), Inspection::default()));
        }
        if !json {
            call.unreadable(bytes.len());
            return Err(unsupported(JSON_ONLY).into());
        }
        let messages = match message::parse(&bytes) {
            Ok(messages) => messages,
            Err(invalid) => {
                call.unreadable(bytes.len());
                let why = format!("Invalid MCP message: {}", invalid.why);
                return Err(Refusal::bad_message(invalid.code, why, invalid.id).into());
            }
        };
        call.messages(&messages, bytes.len());
        if let Err(m) = headers::check(&parts.headers, &messages) {
            let why = format!("Header mismatch: {}", m.why);
            return Err(Refusal::bad_message(m.code, why, m.id).into());
        }
        self.allow(&messages)?;
        let filter_tools = self.mcp.filters_tools()
            && messages
                .messages()
                .iter()
                .any(|m| m.kind == Kind::Request && m.method.as_deref() == Some("tools/list"));
        let inspection = Inspection {
            filter_tools,
            stream: false,
        };
        Ok((Outgoing::Buffered(bytes), inspection))
    }

    /// The method and tool allowlists over every message of the body.
    fn allow(&self, messages: &message::Body) -> Result<(), Refusal> {
        let refusals: Vec<Option<AllowRefusal>> = messages
            .messages()
            .iter()
            .map(|m| self.mcp.message(m).err())
            .collect();
        let Some(first) = refusals.iter().flatten().next() else {
            return Ok(());
        };
        let reason = match first.reason {
            crate::mcp::allow::RefusalReason::Tool => Reason::Tool,
            crate::mcp::allow::RefusalReason::Method => Reason::Method,
        };
        let message = format!("Forbidden: {} not allowed", first.reason.as_str());
        let answer = match messages {
            message::Body::Single(m) => {
                reply::error_object(reply::SERVER_ERROR, &message, m.id.as_deref())
            }
            // A batch runs whole or not at all: every request in it is answered.
            message::Body::Batch(list) => {
                let errors: Vec<String> =
                    list.iter()
                        .zip(&refusals)
                        .filter(|(m, _)| m.kind == Kind::Request)
                        .map(|(m, refused)| {
                            let why = match refused {
                                Some(r) => format!("Forbidden: {} not allowed", r.reason.as_str()),
                                None => "Not executed: another message of the batch was refused"
                                    .to_owned(),
                            };
                            reply::error_object(reply::SERVER_ERROR, &why, m.id.as_deref())
                        })
                        .collect();
                match errors.is_empty() {
                    true => reply::error_object(reply::SERVER_ERROR, &message, None),
                    false => format!("[{}]", errors.join(",")),
                }
            }
        };
        Err(Refusal::Message {
            reason,
            value: first.value.clone(),
            rule: first.rule.clone(),
            answer,
        })
    }

    /// Reads what must be read of the upstream's answer.
    pub(super) async fn inspect_response(
        &self,
        resp: Response<Body>,
        inspection: &Inspection,
    ) -> Response<Body> {
        if !inspection.reads_response() || !resp.status().is_success() {
            return resp;
        }
        let is_sse = sse::is_event_stream(resp.headers());
        let filter_tools = self.mcp.filters_tools();
        let encoded = resp
            .headers()
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
        let must_filter = inspection.filter_tools || (inspection.stream && is_sse && filter_tools);
        if encoded && must_filter {
            tracing::warn!(server = %self.name, "the MCP server compressed a response the gateway must filter; refused");
            return reply::json_rpc_error(
                StatusCode::BAD_GATEWAY,
                "Bad gateway: the MCP server's answer could not be filtered",
            );
        }
        if is_sse {
            let learn = inspection.stream.then(|| self.paths.clone());
            if learn.is_none() && !must_filter {
                return resp;
            }
            let policy = must_filter.then(|| self.mcp.clone());
            let mut resp = resp;
            if policy.is_some() {
                // A rewritten event changes the length.
                resp.headers_mut().remove(header::CONTENT_LENGTH);
            }
            // Refusals need a way onto legacy sessions' streams; without rules there are none.
            let legacy = (inspection.stream && !self.mcp.is_empty()).then(|| self.legacy.clone());
            resp.body_mut()
                .inspect_events(SseInspector::new(learn, policy, legacy));
            return resp;
        }
        if inspection.filter_tools {
            return self.filter_json(resp).await;
        }
        resp
    }

    /// A whole JSON answer with refused tools removed.
    async fn filter_json(&self, resp: Response<Body>) -> Response<Body> {
        let (mut parts, body) = resp.into_parts();
        let bytes = match body::read_bounded(body, MAX_FILTERED_BYTES).await {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(server = %self.name, error = %e, "could not read a tools/list answer to filter it");
                return reply::json_rpc_error(
                    StatusCode::BAD_GATEWAY,
                    "Bad gateway: the MCP server's answer could not be filtered",
                );
            }
        };
        let bytes = match filter::tools_json(&bytes, &self.mcp) {
            Some(filtered) => Bytes::from(filtered),
            None => bytes,
        };
        parts.headers.remove(header::CONTENT_LENGTH);
        Response::from_parts(parts, Body::full(bytes))
    }
}

/// An SSE answer read event by event: the first event may teach the legacy message path, and
/// tools results lose their refused tools. Bytes leave as soon as their event is complete; when
/// nothing is left to do, frames pass straight through.
pub struct SseInspector {
    splitter: sse::Splitter,
    /// Set until the first event was seen.
    learn: Option<Arc<Paths>>,
    filter: Option<McpPolicy>,
    /// Where this stream registers, if it turns out to be a legacy session.
    legacy: Option<Arc<LegacyStreams>>,
    /// The session's message URL and the refusals queued for it.
    session: Option<(String, mpsc::Receiver<Bytes>)>,
    ready: VecDeque<Frame<Bytes>>,
    done: bool,
}

impl Drop for SseInspector {
    fn drop(&mut self) {
        if let (Some(streams), Some((target, _))) = (&self.legacy, &self.session) {
            streams.unregister(target);
        }
    }
}

impl SseInspector {
    fn new(
        learn: Option<Arc<Paths>>,
        filter: Option<McpPolicy>,
        legacy: Option<Arc<LegacyStreams>>,
    ) -> Self {
        let max = if filter.is_some() {
            MAX_FILTERED_BYTES
        } else {
            MAX_ENDPOINT_EVENT
        };
        Self {
            splitter: sse::Splitter::new(max),
            learn,
            filter,
            legacy,
            session: None,
            ready: VecDeque::new(),
            done: false,
        }
    }

    /// Whether events must still be cut apart (to learn, filter, or inject between them).
    fn active(&self) -> bool {
        self.learn.is_some() || self.filter.is_some() || self.session.is_some()
    }

    fn event(&mut self, raw: Bytes) {
        if let Some(paths) = self.learn.take() {
            let event = sse::parse(&raw);
            if event.event.as_deref() == Some("endpoint")
                && let Some(target) = scope::endpoint_target(&event.data)
            {
                let path = target.split('?').next().unwrap_or_default().to_owned();
                if paths.learn(path.clone()) {
                    tracing::info!(path = %path, "learned the legacy HTTP+SSE message path: its POSTs are inspected as MCP messages");
                }
                if let Some(rx) = self.legacy.as_ref().and_then(|s| s.register(&target)) {
                    self.session = Some((target, rx));
                }
            }
        }
        let out = match &self.filter {
            Some(policy) => filter::tools_event(&raw, policy).unwrap_or(raw),
            None => raw,
        };
        self.ready.push_back(Frame::data(out));
    }
}

impl SseInspector {
    /// The next frame for the client, read from `source` event by event.
    pub(super) fn poll_events<S>(
        &mut self,
        source: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>>
    where
        S: HttpBody<Data = Bytes, Error = BoxError> + Unpin,
    {
        loop {
            if let Some(frame) = self.ready.pop_front() {
                return Poll::Ready(Some(Ok(frame)));
            }
            if self.done {
                return Poll::Ready(None);
            }
            let frame = match Pin::new(&mut *source).poll_frame(cx) {
                Poll::Pending => {
                    // Between upstream events, queued refusals of this session go out.
                    if self.splitter.is_empty()
                        && let Some((_, rx)) = &mut self.session
                        && let Poll::Ready(Some(event)) = rx.poll_recv(cx)
                    {
                        self.ready.push_back(Frame::data(event));
                        continue;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(None) => {
                    self.done = true;
                    if let Some(rest) = self.splitter.finish() {
                        self.event(rest);
                    }
                    continue;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            if !self.active() {
                // Nothing left to look for: pass through (after what the splitter held).
                if let Some(rest) = self.splitter.finish() {
                    self.ready.push_back(Frame::data(rest));
                    self.ready.push_back(frame);
                    continue;
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            let Some(data) = frame.data_ref() else {
                return Poll::Ready(Some(Ok(frame)));
            };
            match self.splitter.push(data) {
                Ok(events) => {
                    for event in events {
                        self.event(event);
                    }
                }
                Err(sse::TooLong) if self.filter.is_some() => {
                    // A tools result can't be checked: the stream ends rather than pass it.
                    return Poll::Ready(Some(Err("an SSE event too long to filter".into())));
                }
                Err(sse::TooLong) => {
                    // Only learning: give up on it and pass everything on.
                    self.learn = None;
                }
            }
        }
    }
}
