//! `readiness.v1.ReadinessService`: decode → core → encode.

use tonic::{Request, Response, Status};

use super::convert;
use super::page_token::{self, PageRequest};
use super::pb::get_user_readiness_request::User;
use super::pb::readiness_service_server::ReadinessService;
use super::pb::{
    GetUserReadinessRequest, GetUserReadinessResponse, ListUsersRequest, ListUsersResponse,
    WatchReadinessRequest, WatchReadinessResponse,
};
use super::status::invalid_argument;
use super::streams::{self, ServerStream};
use crate::core::{Core, Cursor, UserFilter, UserLookup};

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
        super::metered("GetUserReadiness", async move {
            let (metadata, _, request) = request.into_parts();
            let options = convert::read_options(&metadata, &request.min_cursor)?;
            let lookup = match request.user {
                Some(User::UserId(id)) => UserLookup::Id(convert::uuid_field("user_id", &id)?),
                Some(User::ExternalId(id)) if !id.trim().is_empty() => UserLookup::ExternalId(id),
                Some(User::ExternalId(_)) => {
                    return Err(invalid_argument("external_id", "must not be empty"));
                }
                None => return Err(invalid_argument("user", "set user_id or external_id")),
            };
            let user = self.core.user_readiness(&lookup, &options).await?;
            Ok(Response::new(GetUserReadinessResponse {
                user: Some(convert::user(&user.value)),
                cursor: user.cursor.encode(),
            }))
        })
        .await
    }

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        super::metered("ListUsers", async move {
            let (metadata, _, request) = request.into_parts();
            let options = convert::read_options(&metadata, &request.min_cursor)?;
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
            let mut cursor = None;
            let (core, slot) = (&self.core, &mut cursor);
            let (users, next_page_token) = page_token::page(
                paging,
                |key| convert::uuid_field("page_token", key),
                |user: &crate::core::UserView| user.id.to_string(),
                |after, limit| async move {
                    let page = core.list_users(&filter, after, limit, &options).await?;
                    *slot = Some(page.cursor);
                    Ok(page.value)
                },
            )
            .await?;
            Ok(Response::new(ListUsersResponse {
                users: users.iter().map(convert::user).collect(),
                next_page_token,
                cursor: cursor.map(Cursor::encode).unwrap_or_default(),
            }))
        })
        .await
    }
}
