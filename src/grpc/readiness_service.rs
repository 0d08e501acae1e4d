//! `readiness.v1.ReadinessService`: decode → core → encode.

use tonic::{Request, Response, Status};

use super::convert;
use super::page_token::{self, PageRequest};
use super::pb::readiness_service_server::ReadinessService;
use super::pb::{
    GetUserReadinessRequest, GetUserReadinessResponse, ListUsersRequest, ListUsersResponse,
    WatchReadinessRequest, WatchReadinessResponse,
};
use super::streams::{self, ServerStream};
use crate::core::{Core, UserFilter, UserView};

pub struct ReadinessApi {
    core: Core,
}

impl ReadinessApi {
    pub fn new(core: Core) -> Self {
        Self { core }
    }
}

#[tonic::async_trait]
impl ReadinessService for ReadinessApi {
    type WatchReadinessStream = ServerStream<WatchReadinessResponse>;

    async fn watch_readiness(
        &self,
        request: Request<WatchReadinessRequest>,
    ) -> Result<Response<Self::WatchReadinessStream>, Status> {
        super::metered("WatchReadiness", async move {
            let stream = streams::watch_readiness(&self.core, request.into_inner()).await?;
            Ok(Response::new(stream))
        })
        .await
    }

    async fn get_user_readiness(
        &self,
        request: Request<GetUserReadinessRequest>,
    ) -> Result<Response<GetUserReadinessResponse>, Status> {
        super::read("GetUserReadiness", request, |request, options| async move {
            let lookup = convert::user_lookup(request.user.map(Into::into))?;
            let user = self.core.user_readiness(&lookup, &options).await?;
            Ok(GetUserReadinessResponse {
                user: Some(convert::user(&user.value)),
                cursor: user.cursor.encode(),
            })
        })
        .await
    }

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        super::read("ListUsers", request, |request, options| async move {
            let filter = UserFilter {
                state: convert::readiness_filter(request.state, "state")?,
                external_id: Some(request.external_id.trim().to_owned())
                    .filter(|id| !id.is_empty()),
            };
            let paging = PageRequest {
                token: &request.page_token,
                size: request.page_size,
                filter: format!(
                    "state={};external_id={}",
                    request.state, request.external_id
                ),
            };
            let (users, next_page_token, cursor) = page_token::page_as_of(
                paging,
                |key| convert::uuid_field("page_token", key),
                |user: &UserView| user.id.to_string(),
                |after, limit| self.core.list_users(&filter, after, limit, &options),
            )
            .await?;
            Ok(ListUsersResponse {
                users: users.iter().map(convert::user).collect(),
                next_page_token,
                cursor,
            })
        })
        .await
    }
}
