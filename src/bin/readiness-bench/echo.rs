//! The reference point: the same transports with no work behind them. `GetUserReadiness` answers
//! a canned user shaped like a seeded one (three accounts); `POST /webhooks/argyle` reads the
//! body and answers 200. Query throughput is reported as a fraction of this server's.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use clap::Args;
use readiness::grpc::pb::readiness_service_server::{ReadinessService, ReadinessServiceServer};
use readiness::grpc::pb::{
    Account, AccountState, GetUserReadinessRequest, GetUserReadinessResponse, ListUsersRequest,
    ListUsersResponse, ReadinessState, UserReadiness, WatchReadinessRequest,
    WatchReadinessResponse,
};
use serde_json::Value;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

#[derive(Debug, Args)]
pub struct EchoArgs {
    /// HTTP listen address (webhooks and `/readyz`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    /// gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    grpc_addr: SocketAddr,
}

struct Echo {
    answer: UserReadiness,
}

#[tonic::async_trait]
impl ReadinessService for Echo {
    type WatchReadinessStream =
        tokio_stream::wrappers::ReceiverStream<Result<WatchReadinessResponse, Status>>;

    async fn get_user_readiness(
        &self,
        request: Request<GetUserReadinessRequest>,
    ) -> Result<Response<GetUserReadinessResponse>, Status> {
        let mut user = self.answer.clone();
        if let Some(readiness::grpc::pb::get_user_readiness_request::User::UserId(id)) =
            request.into_inner().user
        {
            user.user_id = id;
        }
        // A cursor like the service's, so that both answers are the same size.
        Ok(Response::new(GetUserReadinessResponse {
            user: Some(user),
            cursor: readiness::core::Cursor(1_000_000).encode(),
        }))
    }

    async fn list_users(
        &self,
        _: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        Err(Status::unimplemented("echo answers GetUserReadiness only"))
    }

    async fn watch_readiness(
        &self,
        _: Request<WatchReadinessRequest>,
    ) -> Result<Response<Self::WatchReadinessStream>, Status> {
        Err(Status::unimplemented("echo answers GetUserReadiness only"))
    }
}

fn canned() -> UserReadiness {
    let at = Some(prost_types::Timestamp {
        seconds: 1_767_225_600,
        nanos: 0,
    });
    let account = |n: u128| Account {
        account_id: uuid::Uuid::from_u128(n).to_string(),
        state: AccountState::Synced as i32,
        last_synced_at: at,
        first_seen_at: at,
        updated_at: at,
        ..Default::default()
    };
    UserReadiness {
        user_id: uuid::Uuid::nil().to_string(),
        external_id: "bench-0".into(),
        state: ReadinessState::Ready as i32,
        since: at,
        accounts: vec![account(1), account(2), account(3)],
        updated_at: at,
        data_as_of: at,
        external_ids: vec!["bench-0".into()],
    }
}

pub async fn run(args: EchoArgs) -> anyhow::Result<Value> {
    let http = TcpListener::bind(args.http_addr).await?;
    let grpc = TcpListener::bind(args.grpc_addr).await?;
    eprintln!(
        "echo: http on {}, grpc on {}",
        http.local_addr()?,
        grpc.local_addr()?
    );
    let router = Router::new()
        .route(
            "/webhooks/argyle",
            post(|body: Bytes| async move {
                axum::Json(serde_json::json!({"status": "accepted", "bytes": body.len()}))
            }),
        )
        .route("/readyz", get(|| async { "ready" }));
    let grpc_server = tonic::transport::Server::builder()
        .add_service(ReadinessServiceServer::new(Echo { answer: canned() }))
        .serve_with_incoming(TcpIncoming::from(grpc).with_nodelay(Some(true)));
    let http = http.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::try_join!(
        async { axum::serve(http, router).await.map_err(anyhow::Error::from) },
        async { grpc_server.await.map_err(anyhow::Error::from) },
    )?;
    Ok(Value::Null)
}
