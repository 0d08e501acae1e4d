//! Opaque AIP-158 page tokens: base64url of `{"f": <filter fingerprint>, "k": <last key>}`. A
//! token is only valid with the filter it was issued for.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use tonic::Status;

use super::status::invalid_argument;
use super::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};

#[derive(Serialize, Deserialize)]
struct Token {
    f: String,
    k: String,
}

/// Encodes the key of the last item of a page.
pub fn encode(filter: &str, key: &str) -> String {
    let json = serde_json::json!({ "f": filter, "k": key }).to_string();
    URL_SAFE_NO_PAD.encode(json)
}

/// The key a token carries, if the token is non-empty and matches `filter`.
pub fn decode(token: &str, filter: &str) -> Result<Option<String>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || invalid_argument("page_token", "not a page token issued by this service");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let token: Token = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if token.f != filter {
        return Err(invalid_argument(
            "page_token",
            "the token was issued for other filters; repeat the same filters or start without a token",
        ));
    }
    Ok(Some(token.k))
}

/// The page size to use: 0 means the default, larger than the maximum means the maximum.
pub fn page_size(requested: i32) -> Result<u64, Status> {
    match requested {
        n if n < 0 => Err(invalid_argument("page_size", "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok((n as u64).min(MAX_PAGE_SIZE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_only_with_its_filter() {
        let token = encode("state=ready", "abc");
        assert_eq!(decode(&token, "state=ready").unwrap(), Some("abc".into()));
        assert!(decode(&token, "state=pending").is_err());
        assert!(decode("garbage!", "state=ready").is_err());
        assert_eq!(decode("", "x").unwrap(), None);
    }

    #[test]
    fn page_sizes_are_defaulted_and_capped() {
        assert_eq!(page_size(0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(10_000).unwrap(), MAX_PAGE_SIZE);
        assert_eq!(page_size(7).unwrap(), 7);
        assert!(page_size(-1).is_err());
    }
}
