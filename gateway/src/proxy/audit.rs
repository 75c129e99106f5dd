//! The audit record of one request, filled in as the request passes the layers and written when
//! its answer ends (for a stream: when it ends or the client goes). Nothing is allocated when
//! the audit log is off.
use std::{
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Instant, SystemTime},
};

use bytes::Bytes;
use http::{Response, header, request::Parts};
use http_body_util::BodyExt as _;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use serde_json::value::RawValue;

use super::{
    Client, Gateway,
    body::{Body, BoxError},
};
use crate::{
    mcp::{
        audit::{self, AuditLog, Record},
        message,
    },
    policy::sanitize,
};

/// One message of the request, as audited.
#[derive(Debug)]
struct Message {
    method: Option<String>,
    id: Option<Box<RawValue>>,
    name: Option<String>,
}

#[derive(Debug)]
struct Data {
    log: Arc<AuditLog>,
    server: String,
    started: Instant,
    time: SystemTime,
    peer: SocketAddr,
    origin: Option<String>,
    credential: Option<Arc<str>>,
    http_method: String,
    path: String,
    messages: Vec<Message>,
    decision: &'static str,
    status: u16,
    /// Whether this is an MCP request (an MCP path, or a JSON-RPC body): only those are written.
    mcp: bool,
    bytes_in: u64,
    bytes_out: u64,
}

impl Data {
    /// The line of one message (or of the request, when it carries none).
    fn record<'a>(&'a self, m: Option<&'a Message>, duration_ms: f64) -> Record<'a> {
        Record {
            time: audit::timestamp(self.time),
            server: &self.server,
            peer: self.peer.to_string(),
            origin: self.origin.as_deref(),
            credential: self.credential.as_deref(),
            http_method: &self.http_method,
            path: &self.path,
            method: m.and_then(|m| m.method.as_deref()),
            id: m.and_then(|m| m.id.as_deref()),
            name: m.and_then(|m| m.name.as_deref()).map(audit::cut),
            status: self.status,
            decision: self.decision,
            duration_ms,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
        }
    }

    fn write(&self) {
        let micros = self.started.elapsed().as_micros();
        let duration_ms = micros as f64 / 1000.0;
        let records: Vec<Record<'_>> = if self.messages.is_empty() {
            vec![self.record(None, duration_ms)]
        } else {
            self.messages
                .iter()
                .map(|m| self.record(Some(m), duration_ms))
                .collect()
        };
        self.log.write(&records);
    }
}

/// The audit record of one request; empty when the audit log is off.
#[derive(Debug)]
pub struct Call(Option<Box<Data>>);

impl Call {
    /// Starts the record of a request to `gw`.
    pub fn start(gw: &Gateway, client: &Client, parts: &Parts) -> Self {
        let Some(log) = &gw.audit else {
            return Self(None);
        };
        let origin = parts
            .headers
            .get(header::ORIGIN)
            .map(|o| sanitize(o.as_bytes()));
        Self(Some(Box::new(Data {
            log: log.clone(),
            server: gw.name.clone(),
            started: Instant::now(),
            time: SystemTime::now(),
            peer: client.peer,
            origin,
            credential: client.name().cloned(),
            http_method: parts.method.to_string(),
            path: sanitize(parts.uri.path().as_bytes()),
            messages: Vec::new(),
            decision: "allowed",
            status: 0,
            mcp: gw.paths.contains(parts.uri.path()),
            bytes_in: 0,
            bytes_out: 0,
        })))
    }

    /// The request carries these MCP messages (`bytes` long).
    pub fn messages(&mut self, body: &message::Body, bytes: usize) {
        let Some(data) = &mut self.0 else {
            return;
        };
        data.mcp = true;
        data.bytes_in = bytes as u64;
        data.messages = body
            .messages()
            .iter()
            .map(|m| Message {
                method: m.method.clone(),
                id: m
                    .id
                    .as_ref()
                    .and_then(|id| RawValue::from_string(id.clone()).ok()),
                name: m.name.clone(),
            })
            .collect();
    }

    /// The request body is an MCP message that could not be read (`bytes` long).
    pub fn unreadable(&mut self, bytes: usize) {
        if let Some(data) = &mut self.0 {
            data.mcp = true;
            data.bytes_in = bytes as u64;
        }
    }

    /// The credential the request was authenticated with (after the auth layer).
    pub fn credential(&mut self, name: Option<&Arc<str>>) {
        if let Some(data) = &mut self.0 {
            data.credential = name.cloned();
        }
    }

    /// Why the gateway refused the request (`host`, `tool`, `invalid`...).
    pub fn refused(&mut self, decision: &'static str) {
        if let Some(data) = &mut self.0 {
            data.decision = decision;
        }
    }

    /// Ties the record to the answer: written when its body ends or is dropped.
    pub fn finish(self, resp: Response<Body>) -> Response<Body> {
        let Some(mut data) = self.0.filter(|d| d.mcp) else {
            return resp;
        };
        data.status = resp.status().as_u16();
        let (parts, body) = resp.into_parts();
        let body = Audited {
            inner: body,
            data: Some(data),
        };
        Response::from_parts(parts, body.boxed_unsync())
    }
}

/// A response body that counts its bytes and writes the record when it ends.
struct Audited {
    inner: Body,
    data: Option<Box<Data>>,
}

impl Drop for Audited {
    fn drop(&mut self) {
        if let Some(data) = self.data.take() {
            data.write();
        }
    }
}

impl HttpBody for Audited {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(bytes)) = (&mut self.data, frame.data_ref()) {
                    data.bytes_out += bytes.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                if let Some(data) = self.data.take() {
                    data.write();
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
