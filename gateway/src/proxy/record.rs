//! The audit record of one request, filled in as the request passes the layers and written when
//! its answer ends (for a stream: when it ends or the client goes). Nothing is allocated when
//! the audit log is off.
use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Instant, SystemTime},
};

use http::{Response, header, request::Parts};
use serde_json::value::RawValue;

use super::{Client, Gateway, body::Body};
use crate::{
    mcp::{
        audit::{self, AuditLog, Line},
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

/// What the audit log records of one request, written when its answer ends.
#[derive(Debug)]
pub struct Record {
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

impl Record {
    /// The line of one message (or of the request, when it carries none).
    fn line<'a>(&'a self, m: Option<&'a Message>, duration_ms: f64) -> Line<'a> {
        Line {
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

    /// `bytes` more of the answer were sent.
    pub fn sent(&mut self, bytes: usize) {
        self.bytes_out += bytes as u64;
    }

    /// Queues the record's lines on the audit log.
    pub fn write(&self) {
        let micros = self.started.elapsed().as_micros();
        let duration_ms = micros as f64 / 1000.0;
        let lines: Vec<Line<'_>> = if self.messages.is_empty() {
            vec![self.line(None, duration_ms)]
        } else {
            self.messages
                .iter()
                .map(|m| self.line(Some(m), duration_ms))
                .collect()
        };
        self.log.write(&lines);
    }
}

/// The audit record of one request; empty when the audit log is off.
#[derive(Debug)]
pub struct Call(Option<Box<Record>>);

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
        Self(Some(Box::new(Record {
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
    pub fn finish(self, mut resp: Response<Body>) -> Response<Body> {
        if let Some(mut record) = self.0.filter(|r| r.mcp) {
            record.status = resp.status().as_u16();
            resp.body_mut().audit(record);
        }
        resp
    }
}
