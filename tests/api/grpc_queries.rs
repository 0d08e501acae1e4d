//! ReadinessService queries: lookups, errors, filters and pagination.

use readiness::grpc::pb::{self, ReadinessState};
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{TestApp, body, new_id};

fn by_external_id(id: &str) -> pb::GetUserReadinessRequest {
    pb::GetUserReadinessRequest {
        user: Some(pb::get_user_readiness_request::User::ExternalId(id.into())),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_user_is_found_by_external_id_and_null_or_empty_external_ids_mean_none() {
    let app = TestApp::spawn().await;
    let (named, unnamed, blank) = (new_id(), new_id(), new_id());
    let external_id = format!("applicant-{}", new_id());
    for (user, external) in [
        (&named, Some(external_id.as_str())),
        (&unnamed, None),
        (&blank, Some("")),
    ] {
        let account = new_id();
        app.deliver_ok(&body::connected(user, &account)).await;
        app.deliver_ok(&body::ready_with_external_id(
            user,
            external,
            &[(&account, "2024-01-08T12:00:00Z")],
        ))
        .await;
    }

    let mut client = app.readiness_client().await;
    let found = client
        .get_user_readiness(by_external_id(&external_id))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(found.user_id, named);
    assert_eq!(found.external_id, external_id);
    assert_eq!(found.state(), ReadinessState::Ready);

    for user in [&unnamed, &blank] {
        assert_eq!(app.readiness(user).await.external_id, "", "user {user}");
    }
    let status = client
        .get_user_readiness(by_external_id(""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = client
        .get_user_readiness(by_external_id("nobody"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test]
async fn an_external_id_is_looked_up_without_surrounding_whitespace_as_it_is_stored() {
    let app = TestApp::spawn().await;
    let (user, account) = (new_id(), new_id());
    let external_id = format!("applicant-{}", new_id());
    app.deliver_ok(&body::connected(&user, &account)).await;
    app.deliver_ok(&body::ready_with_external_id(
        &user,
        Some(&format!(" {external_id}\n")),
        &[(&account, "2024-01-08T12:00:00Z")],
    ))
    .await;

    let mut client = app.readiness_client().await;
    for asked in [external_id.clone(), format!("\t{external_id}  ")] {
        let found = client
            .get_user_readiness(by_external_id(&asked))
            .await
            .unwrap_or_else(|status| panic!("{asked:?}: {status:?}"))
            .into_inner()
            .user
            .unwrap();
        assert_eq!(found.user_id, user, "{asked:?}");
        assert_eq!(found.external_id, external_id, "{asked:?}");
    }
    let status = client
        .get_user_readiness(by_external_id(" \t "))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    app.stop().await;
}

#[tokio::test]
async fn a_malformed_user_id_is_invalid_argument_naming_the_field_and_an_unknown_one_not_found() {
    let app = TestApp::spawn().await;
    let mut client = app.readiness_client().await;
    let request = |id: &str| pb::GetUserReadinessRequest {
        user: Some(pb::get_user_readiness_request::User::UserId(id.into())),
        ..Default::default()
    };

    let status = client
        .get_user_readiness(request("12345"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = status
        .get_details_bad_request()
        .expect("BadRequest details");
    assert_eq!(details.field_violations[0].field, "user_id");

    let status = client
        .get_user_readiness(request(&new_id()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let status = client
        .get_user_readiness(pb::GetUserReadinessRequest {
            user: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    app.stop().await;
}

#[tokio::test]
async fn users_are_listed_by_state_across_pages() {
    let app = TestApp::spawn().await;
    let mut ready = Vec::new();
    for i in 0..7 {
        let (user, account) = (new_id(), new_id());
        app.deliver_ok(&body::connected(&user, &account)).await;
        if i % 2 == 0 {
            app.deliver_ok(&body::ready(&user, &[(&account, "2024-01-08T12:00:00Z")]))
                .await;
            ready.push(user);
        }
    }
    ready.sort();

    let mut client = app.readiness_client().await;
    let mut seen = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_users(pb::ListUsersRequest {
                state: ReadinessState::Ready.into(),
                page_size: 3,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(
            page.users
                .iter()
                .all(|u| u.state() == ReadinessState::Ready && u.accounts.len() == 1)
        );
        seen.extend(page.users.into_iter().map(|u| u.user_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, ready);
    assert_eq!(pages, 2);

    let all = client
        .list_users(pb::ListUsersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.users.len(), 7);
    assert!(all.next_page_token.is_empty());

    // A token is only valid with the filter it was issued for.
    let first = client
        .list_users(pb::ListUsersRequest {
            state: ReadinessState::Ready.into(),
            page_size: 1,
            page_token: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let status = client
        .list_users(pb::ListUsersRequest {
            state: ReadinessState::Pending.into(),
            page_size: 1,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = client
        .list_users(pb::ListUsersRequest {
            state: 99,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    app.stop().await;
}

#[tokio::test]
async fn grpc_health_reports_our_services_as_serving() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let app = TestApp::spawn().await;
    let channel = app.channel().await;
    let mut health = HealthClient::new(channel);
    for service in [
        "",
        "readiness.v1.ReadinessService",
        "readiness.v1.ReportService",
    ] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn grpc_health_turns_not_serving_when_the_database_is_lost() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let app = TestApp::spawn().await;
    let channel = app.channel().await;
    let mut health = HealthClient::new(channel);

    app.core.db().close_by_ref().await.unwrap();

    let mut status = ServingStatus::Serving;
    for _ in 0..100 {
        let request = HealthCheckRequest {
            service: "readiness.v1.ReadinessService".into(),
        };
        status = health.check(request).await.unwrap().into_inner().status();
        if status == ServingStatus::NotServing {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, ServingStatus::NotServing);
}
