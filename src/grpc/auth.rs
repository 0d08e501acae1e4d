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

    /// Checks a request's `authorization` header.
    pub fn check(&self, headers: &http::HeaderMap) -> Result<(), Status> {
        let token = headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        match token {
            None => Err(Status::unauthenticated(
                "missing bearer token: send `authorization: Bearer <token>`",
            )),
            Some(token) if self.accepts(token) => Ok(()),
            Some(_) => Err(Status::unauthenticated("invalid bearer token")),
        }
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
        self.check(&request.metadata().clone().into_headers())?;
        Ok(request)
    }
}

/// Per-method tokens for a service: the methods named in `restricted` need one of their own
/// tokens (or, without any, the general ones); every other method the general ones.
#[derive(Clone)]
pub struct MethodAuth<S> {
    inner: S,
    general: Option<BearerAuth>,
    restricted: Option<BearerAuth>,
    /// Method names (the last path segment), e.g. `RequestReport`.
    methods: &'static [&'static str],
}

impl<S> MethodAuth<S> {
    pub fn new(
        inner: S,
        general: Option<BearerAuth>,
        restricted: Option<BearerAuth>,
        methods: &'static [&'static str],
    ) -> Self {
        Self {
            inner,
            general,
            restricted,
            methods,
        }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for MethodAuth<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for MethodAuth<S>
where
    S: tower::Service<
            http::Request<B>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().rsplit('/').next().unwrap_or_default();
        let auth = if self.methods.contains(&method) {
            self.restricted.as_ref().or(self.general.as_ref())
        } else {
            self.general.as_ref()
        };
        if let Some(Err(status)) = auth.map(|auth| auth.check(request.headers())) {
            return Box::pin(async move { Ok(status.into_http()) });
        }
        Box::pin(self.inner.call(request))
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
