//! Optional bearer-token authentication, compared in constant time.
use http::{HeaderMap, header};
use subtle::ConstantTimeEq as _;

use crate::config::Token;

/// Whether `headers` carry `Authorization: Bearer <token>` for exactly this token.
pub fn authorized(headers: &HeaderMap, token: &Token) -> bool {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let value = value.as_bytes();
    let Some(presented) = value
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
        .and(value.get(7..))
    else {
        return false;
    };
    // ct_eq is constant-time for equal lengths; a length mismatch reveals only the length.
    bool::from(presented.ct_eq(&token.0))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn check(values: &[&[u8]]) -> bool {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        }
        authorized(&headers, &Token(b"s3cret-token".to_vec()))
    }

    #[test]
    fn bearer_token_table() {
        let cases: &[(&[&[u8]], bool)] = &[
            (&[b"Bearer s3cret-token"], true),
            (&[b"bearer s3cret-token"], true),
            (&[b"BEARER s3cret-token"], true),
            (&[], false),
            (&[b"Bearer s3cret-tokem"], false),
            (&[b"Bearer s3cret-token "], false),
            (&[b"Bearer s3cret"], false),
            (&[b"Bearer "], false),
            (&[b"Basic s3cret-token"], false),
            (&[b"s3cret-token"], false),
            (&[b"Bearer s3cret-token", b"Bearer s3cret-token"], false),
            (&[b"Bearer s3cret-token\xff"], false),
        ];
        for (values, want) in cases {
            assert_eq!(check(values), *want, "{values:?}");
        }
    }
}
