//! AIP-158 paging for every List RPC: opaque page tokens (base64url of `{"f": <filter
//! fingerprint>, "k": <last key>}`, only valid with the filter they were issued for) and
//! [`page`], which reads one item more than the page size to know whether another page follows.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use tonic::Status;

use super::status::invalid_argument;
use super::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use crate::core::{AsOf, CoreError, Cursor};

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

/// How one List request pages: its token, its page size and its filter's fingerprint.
pub struct PageRequest<'a> {
    pub token: &'a str,
    pub size: i32,
    /// Everything the request filters by, so that a token is refused with other filters.
    pub filter: String,
}

/// One page: decodes the token into the last key of the previous page (`parse_key`), asks
/// `fetch(after, limit)` for one item more than the page size, and returns the page with the
/// token of the next one (empty on the last page; `key_of` gives an item's key).
pub async fn page<T, K, Fut>(
    request: PageRequest<'_>,
    parse_key: impl FnOnce(&str) -> Result<K, Status>,
    key_of: impl Fn(&T) -> String,
    fetch: impl FnOnce(Option<K>, u64) -> Fut,
) -> Result<(Vec<T>, String), Status>
where
    Fut: std::future::Future<Output = Result<Vec<T>, CoreError>>,
{
    let after = decode(request.token, &request.filter)?
        .map(|key| parse_key(&key))
        .transpose()?;
    let limit = page_size(request.size)?;
    let mut items = fetch(after, limit + 1).await?;
    let more = items.len() as u64 > limit;
    items.truncate(limit as usize);
    let next = match items.last() {
        Some(last) if more => encode(&request.filter, &key_of(last)),
        _ => String::new(),
    };
    Ok((items, next))
}

/// [`page`] of a read that is answered with the log position it reflects: also that position's
/// encoded cursor.
pub async fn page_as_of<T, K, Fut>(
    request: PageRequest<'_>,
    parse_key: impl FnOnce(&str) -> Result<K, Status>,
    key_of: impl Fn(&T) -> String,
    fetch: impl FnOnce(Option<K>, u64) -> Fut,
) -> Result<(Vec<T>, String, String), Status>
where
    Fut: std::future::Future<Output = Result<AsOf<Vec<T>>, CoreError>>,
{
    let mut cursor = None;
    let slot = &mut cursor;
    let (items, next) = page(request, parse_key, key_of, |after, limit| async move {
        let answer = fetch(after, limit).await?;
        *slot = Some(answer.cursor);
        Ok(answer.value)
    })
    .await?;
    Ok((items, next, cursor.map(Cursor::encode).unwrap_or_default()))
}

/// A numeric page key (positions, inbox ids).
pub fn numeric_key(key: &str) -> Result<i64, Status> {
    key.parse()
        .map_err(|_| invalid_argument("page_token", "malformed"))
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
