//! MCP-aware edge controls: what the gateway reads of the MCP messages it relays.
//!
//! - [`message`]: a POST body parsed as JSON-RPC, strictly (parse error -32700, invalid request
//!   -32600);
//! - [`headers`]: 2026-07-28 request metadata headers against the body (-32020);
//! - [`allow`]: method and tool allowlists;
//! - [`scope`]: which requests carry MCP messages;
//! - [`filter`] and [`sse`]: `tools/list` results without refused tools, in JSON and in SSE;
//! - [`audit`]: the audit log of MCP calls.
//!
//! Every decision here is a pure function of the request; the plumbing is in `proxy`.
pub mod allow;
pub mod audit;
pub mod filter;
pub mod headers;
pub mod message;
pub mod scope;
pub mod sse;

pub use self::allow::{McpPolicy, McpSettings};
