//! `reports.generated` → report records → ReportService.

use readiness::grpc::pb::{self, ReportType};
use tonic::Code;

use crate::helpers::{TestApp, body, new_id};

async fn list(app: &TestApp, request: pb::ListReportsRequest) -> pb::ListReportsResponse {
    app.report_client()
        .await
        .list_reports(request)
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn a_generated_report_is_recorded_once_with_or_without_argyle_report_id() {
    let app = TestApp::spawn().await;
    let user = new_id();
    let argyle_id = new_id();
    app.deliver_ok(&body::generated(&user, "voie", Some(&argyle_id)))
        .await;
    let events = app.event_count().await;
    // Announced again by a second subscription: same report, no new event.
    let twin = serde_json::json!({"event": "reports.generated", "name": "second",
        "data": {"user": user, "type": "voie", "report_id": argyle_id}})
    .to_string();
    app.deliver_ok(&twin).await;
    assert_eq!(app.event_count().await, events);
    app.deliver_ok(&body::generated(&user, "voe-mortgage", None))
        .await;
    assert_eq!(app.event_count().await, events + 1);

    let by_argyle_id = app.report_by_argyle_id(&argyle_id).await;
    let mut client = app.report_client().await;
    assert_eq!(by_argyle_id.user_id, user);
    assert_eq!(by_argyle_id.r#type(), ReportType::Voie);
    assert_eq!(by_argyle_id.type_name, "voie");
    assert!(by_argyle_id.generated_at.is_some());

    let by_id = client
        .get_report(pb::GetReportRequest {
            report: Some(pb::get_report_request::Report::Id(by_argyle_id.id.clone())),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();
    assert_eq!(by_id, by_argyle_id);

    let all = list(
        &app,
        pb::ListReportsRequest {
            user_id: user.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(all.reports.len(), 2);
    assert_eq!(all.reports[1].argyle_report_id, "");
    assert_eq!(all.reports[1].r#type(), ReportType::VoeMortgage);
    app.stop().await;
}

#[tokio::test]
async fn reports_are_listed_by_user_and_type_across_pages() {
    let app = TestApp::spawn().await;
    let (user, other) = (new_id(), new_id());
    for i in 0..5 {
        app.deliver_ok(&body::generated(
            &user,
            "voie",
            Some(&format!("r-voie-{i}-{user}")),
        ))
        .await;
    }
    app.deliver_ok(&body::generated(&user, "voe", None)).await;
    app.deliver_ok(&body::generated(&user, "voa-2030", None))
        .await;
    app.deliver_ok(&body::generated(&other, "voie", None)).await;

    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = list(
            &app,
            pb::ListReportsRequest {
                user_id: user.clone(),
                r#type: ReportType::Voie.into(),
                page_size: 2,
                page_token: page_token.clone(),
                ..Default::default()
            },
        )
        .await;
        assert!(page.reports.len() <= 2);
        seen.extend(page.reports.into_iter().map(|r| r.argyle_report_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let expected: Vec<_> = (0..5).map(|i| format!("r-voie-{i}-{user}")).collect();
    assert_eq!(seen, expected);

    let unknown = list(
        &app,
        pb::ListReportsRequest {
            r#type: ReportType::Other.into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(unknown.reports.len(), 1);
    assert_eq!(unknown.reports[0].type_name, "voa-2030");
    assert_eq!(unknown.reports[0].r#type(), ReportType::Other);

    // By Argyle's exact type string, known to this version or not.
    for (type_name, count) in [
        ("voa-2030", 1),
        ("voe", 1),
        ("voie", 6),
        ("no-such-type", 0),
    ] {
        let listed = list(
            &app,
            pb::ListReportsRequest {
                type_name: type_name.into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(listed.reports.len(), count, "type_name {type_name}");
        assert!(listed.reports.iter().all(|r| r.type_name == type_name));
    }
    app.stop().await;
}

#[tokio::test]
async fn report_lookups_with_bad_or_unknown_ids_get_canonical_errors() {
    let app = TestApp::spawn().await;
    let mut client = app.report_client().await;
    let status = client
        .get_report(pb::GetReportRequest {
            report: Some(pb::get_report_request::Report::Id("nope".into())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("id:"), "{}", status.message());

    let status = client
        .get_report(pb::GetReportRequest {
            report: Some(pb::get_report_request::Report::Id(new_id())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let status = client
        .get_report(pb::GetReportRequest {
            report: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    let status = client
        .list_reports(pb::ListReportsRequest {
            user_id: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("user_id:"));
    app.stop().await;
}
