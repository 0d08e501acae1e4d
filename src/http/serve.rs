//! The HTTP/1.1 server loop (hyper, in place of `axum::serve`, whose connections cannot be given
//! timeouts): connections admitted under the listener's cap ([`crate::accept`]), a deadline for
//! the first request's headers, an idle keep-alive limit that also bounds later requests'
//! headers, and graceful shutdown. HTTP/2 is not served on this port (webhooks are HTTP/1.1).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::accept::Admission;

/// How long a connection may take over its requests' headers.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionTimeouts {
    /// From accept to the end of the first request's headers.
    pub first_headers: Duration,
    /// From the end of a response to the end of the next request's headers (keep-alive idle).
    pub idle: Duration,
}

/// Serves `router` on every admitted connection until `shutdown` is cancelled, then stops
/// listening and waits for open connections to finish their requests.
pub async fn serve(
    mut admission: Admission,
    router: Router,
    timeouts: ConnectionTimeouts,
    shutdown: CancellationToken,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    // hyper starts this timer whenever it waits for a request head, including while a
    // keep-alive connection is idle after a response; the first request has its own, shorter
    // deadline below.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.idle);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer, slot) = tokio::select! {
            () = shutdown.cancelled() => break,
            admitted = admission.accept() => admitted,
        };
        let first_request = Arc::new(Notify::new());
        let seen = first_request.clone();
        let service = router
            .clone()
            .map_request(move |request: axum::http::Request<Incoming>| {
                seen.notify_one();
                let mut request = request.map(Body::new);
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let connection = graceful.watch(
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)),
        );
        let first_headers = timeouts.first_headers;
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            // Completes only if the connection should be dropped before its first request.
            let give_up = async {
                tokio::select! {
                    () = first_request.notified() => std::future::pending().await,
                    () = tokio::time::sleep(first_headers) => "no request headers in time",
                    () = shutdown.cancelled() => "shutting down before any request",
                }
            };
            tokio::select! {
                served = connection => {
                    if let Err(error) = served {
                        tracing::debug!(%peer, %error, "HTTP connection ended");
                    }
                }
                reason = give_up => tracing::debug!(%peer, reason, "HTTP connection closed"),
            }
        });
    }
    // Close the listening socket now, so new clients are refused rather than left waiting.
    drop(admission);
    graceful.shutdown().await;
}
