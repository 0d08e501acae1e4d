//! Optional bearer-token access control for gRPC. Tokens are configured as SHA-256 hashes (never
//! in clear), compared in constant time; a missing or wrong token is `UNAUTHENTICATED`.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};
use tonic::{Request, Status};

/// The SHA-256 of a token, as configured in `grpc_token_sha256`.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Checks `authorization: Bearer <token>` against the configured hashes.
#[derive(Clone)]
pub struct BearerAuth {
    hashes: Arc<[[u8; 32]]>,
}

impl BearerAuth {
    /// `None` when no token is configured (gRPC is open).
    pub fn new(hashes: &[[u8; 32]]) -> Option<Self> {
        (!hashes.is_empty()).then(|| Self {
            hashes: hashes.into(),
        })
    }

    fn accepts(&self, token: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let matched = self.hashes.iter().fold(Choice::from(0), |matched, hash| {
            matched | hash.ct_eq(&presented)
        });
        matched.into()
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let header = request.metadata().get("authorization");
        let token = header
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        match token {
            None => Err(Status::unauthenticated(
                "missing bearer token: send `authorization: Bearer <token>`",
            )),
            Some(token) if self.accepts(token) => Ok(request),
            Some(_) => Err(Status::unauthenticated("invalid bearer token")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tokens_whose_hash_is_configured_are_accepted() {
        let hash: [u8; 32] = hex::decode(hash_token("let-me-in"))
            .unwrap()
            .try_into()
            .unwrap();
        let auth = BearerAuth::new(&[hash]).unwrap();
        assert!(auth.accepts("let-me-in"));
        assert!(!auth.accepts("let-me-in "));
        assert!(!auth.accepts(""));
        assert!(BearerAuth::new(&[]).is_none());
    }
}
