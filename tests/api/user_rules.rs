//! User-level rules through HTTP and gRPC: what a delivery teaches about a user, and what it
//! leaves alone.

use serde_json::json;
use tonic::Code;

use readiness::grpc::pb;

use crate::helpers::{TestApp, new_id};

#[tokio::test]
async fn an_accounts_updated_without_a_resource_changes_nothing() {
    let app = TestApp::spawn().await;
    let (user, account) = (new_id(), new_id());
    let bare = json!({"event": "accounts.updated", "name": "readiness-test",
                      "data": {"account": account, "user": user}})
    .to_string();

    let answer = app.deliver_ok(&bare).await;

    assert_eq!(answer["status"], "applied");
    let status = app
        .readiness_client()
        .await
        .get_user_readiness(pb::GetUserReadinessRequest {
            user: Some(pb::get_user_readiness_request::User::UserId(user)),
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::NotFound,
        "no user (and no pending account) from an event that tells nothing"
    );
    assert_eq!(app.event_count().await, 0);
    app.stop().await;
}
