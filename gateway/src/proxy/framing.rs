//! Request framing the gateway refuses although hyper parsed it: what request smuggling needs.
//!
//! hyper's HTTP/1.1 parser already refuses ambiguous framing (differing or list-valued
//! `Content-Length`, a final coding other than `chunked`, obs-fold, bare CR, NUL) with 400. Two
//! forms get through it:
//! - **`Content-Length` with `Transfer-Encoding`** (CL.TE, TE.CL): hyper follows the chunked
//!   coding, as RFC 9112 §6.3 allows, and hides the length; [`super::head_watch`] marks the
//!   connection. The RFC says such a message "ought to be handled as an error" (nginx answers
//!   400): 400.
//! - **`CONNECT`**: a tunnel request. The gateway proxies MCP requests and opens no tunnels, and
//!   an upstream must never see one: 405.
//!
//! Whatever passes is re-framed on the way out (origin-form target, the gateway's own `Host`,
//! its own length or chunks), so nothing a client hides in its framing reaches the upstream as
//! a request.
use http::{Method, StatusCode, header, request::Parts};

/// Why the framing was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Both `Content-Length` and `Transfer-Encoding`: 400.
    BothLengths,
    /// `CONNECT`: 405.
    Connect,
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Self::BothLengths => StatusCode::BAD_REQUEST,
            Self::Connect => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// The JSON-RPC error message: says what to do, reveals nothing of the configuration.
    pub fn message(self) -> &'static str {
        match self {
            Self::BothLengths => {
                "Bad request: Content-Length and Transfer-Encoding together; send one of them"
            }
            Self::Connect => "Method not allowed: the gateway does not open tunnels (CONNECT)",
        }
    }
}

/// The decision: `Ok` when the request's framing is one the gateway forwards. `both_lengths`:
/// the connection's tracker saw a head with both `Content-Length` and `Transfer-Encoding`.
pub fn verify(parts: &Parts, both_lengths: bool) -> Result<(), Refusal> {
    if parts.method == Method::CONNECT {
        return Err(Refusal::Connect);
    }
    // hyper kept only Transfer-Encoding; the tracker saw the hidden length.
    if both_lengths && parts.headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(Refusal::BothLengths);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, headers: &[(&str, &str)]) -> Parts {
        let mut req = http::Request::builder().method(method).uri("/mcp");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn framing_table() {
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a [(&'a str, &'a str)],
            bool,
            Result<(), Refusal>,
        );
        let te = ("transfer-encoding", "chunked");
        let cases: &[Case] = &[
            (
                "a POST with a length",
                "POST",
                &[("content-length", "40")],
                false,
                Ok(()),
            ),
            ("a GET without a body", "GET", &[], false, Ok(())),
            ("a chunked upload", "PUT", &[te], false, Ok(())),
            (
                "CL.TE / TE.CL (the length hidden by hyper)",
                "POST",
                &[te],
                true,
                Err(Refusal::BothLengths),
            ),
            (
                "chunked after another coding, with a hidden length",
                "POST",
                &[("transfer-encoding", "gzip, chunked")],
                true,
                Err(Refusal::BothLengths),
            ),
            // The mark is per connection: an earlier or later request on it had both lengths,
            // this one only a length (hyper closes such a connection after its answer anyway).
            (
                "a clean request on a marked connection",
                "POST",
                &[("content-length", "4")],
                true,
                Ok(()),
            ),
            ("a tunnel", "CONNECT", &[], false, Err(Refusal::Connect)),
            (
                "a tunnel with both lengths",
                "CONNECT",
                &[te],
                true,
                Err(Refusal::Connect),
            ),
        ];
        for (what, method, headers, both, want) in cases {
            assert_eq!(verify(&parts(method, headers), *both), *want, "{what}");
        }
    }

    #[test]
    fn refusals_are_4xx_and_say_what_to_do() {
        for refusal in [Refusal::BothLengths, Refusal::Connect] {
            assert!(refusal.status().is_client_error(), "{refusal:?}");
            assert!(refusal.message().contains(':'), "{refusal:?}");
        }
    }
}
