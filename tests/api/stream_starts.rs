//! Where streams start: `WatchReadiness` from the beginning, resumed from a cursor, and limited
//! to one user by `external_id`; and `after_cursor` winning over `start` on both streams.

use std::time::Duration;

use readiness::grpc::pb::stream_report_events_response::Message as ReportMessage;
use readiness::grpc::pb::watch_readiness_response::Message as WatchMessage;
use readiness::grpc::pb::{self, ReadinessState, StartPosition};
use tonic::Streaming;

use crate::helpers::{TestApp, body, new_id};

/// Long enough for anything that should happen; only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(20);

const SYNCED: &str = "2024-01-08T12:00:00Z";

async fn watch(
    app: &TestApp,
    request: pb::WatchReadinessRequest,
) -> Streaming<pb::WatchReadinessResponse> {
    app.readiness_client()
        .await
        .watch_readiness(request)
        .await
        .expect("stream opens")
        .into_inner()
}

/// The next change or caught-up marker, skipping heartbeats.
async fn next_watched(stream: &mut Streaming<pb::WatchReadinessResponse>) -> WatchMessage {
    let wait = async {
        loop {
            let message = stream
                .message()
                .await
                .expect("the stream is healthy")
                .expect("the stream is open")
                .message
                .unwrap();
            if !matches!(message, WatchMessage::Heartbeat(_)) {
                return message;
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .expect("a message in time")
}

/// Every change up to the caught-up marker.
async fn changes_until_caught_up(
    stream: &mut Streaming<pb::WatchReadinessResponse>,
) -> Vec<pb::ReadinessChange> {
    let mut changes = Vec::new();
    loop {
        match next_watched(stream).await {
            WatchMessage::Change(change) => changes.push(change),
            WatchMessage::CaughtUp(_) => return changes,
            WatchMessage::Heartbeat(_) => unreachable!("skipped"),
        }
    }
}

/// (user, previous state, state) of each change.
fn moves(changes: &[pb::ReadinessChange]) -> Vec<(String, ReadinessState, ReadinessState)> {
    changes
        .iter()
        .map(|c| (c.user_id.clone(), c.previous_state(), c.state()))
        .collect()
}

/// Two users, each connected then ready; the first has an external id. Returns both ids.
async fn two_users_become_ready(app: &TestApp, external_id: &str) -> (String, String) {
    let (first, second) = (new_id(), new_id());
    let (first_account, second_account) = (new_id(), new_id());
    app.deliver_ok(&body::connected(&first, &first_account))
        .await;
    app.deliver_ok(&body::connected(&second, &second_account))
        .await;
    app.deliver_ok(&body::ready_with_external_id(
        &first,
        Some(external_id),
        &[(&first_account, SYNCED)],
    ))
    .await;
    app.deliver_ok(&body::ready(&second, &[(&second_account, SYNCED)]))
        .await;
    (first, second)
}

#[tokio::test]
async fn watch_readiness_from_the_beginning_replays_every_change_then_resumes_after_a_cursor() {
    let app = TestApp::spawn().await;
    let (first, second) = two_users_become_ready(&app, &format!("ext-{}", new_id())).await;
    use ReadinessState::{Pending, Ready, Unspecified};
    let all = vec![
        (first.clone(), Unspecified, Pending),
        (second.clone(), Unspecified, Pending),
        (first.clone(), Pending, Ready),
        (second.clone(), Pending, Ready),
    ];

    let mut from_beginning = watch(
        &app,
        pb::WatchReadinessRequest {
            start: StartPosition::Beginning.into(),
            ..Default::default()
        },
    )
    .await;
    let replayed = changes_until_caught_up(&mut from_beginning).await;
    assert_eq!(moves(&replayed), all, "every stored change, in order");

    let mut resumed = watch(
        &app,
        pb::WatchReadinessRequest {
            after_cursor: replayed[1].cursor.clone(),
            ..Default::default()
        },
    )
    .await;
    let rest = changes_until_caught_up(&mut resumed).await;
    assert_eq!(
        moves(&rest),
        all[2..],
        "after the cursor: no gap, nothing twice"
    );
    assert_eq!(
        rest.iter().map(|c| &c.event_id).collect::<Vec<_>>(),
        replayed[2..]
            .iter()
            .map(|c| &c.event_id)
            .collect::<Vec<_>>(),
        "the same events, with the same ids"
    );

    // Both follow live changes once caught up.
    let third = new_id();
    app.deliver_ok(&body::connected(&third, &new_id())).await;
    for stream in [&mut from_beginning, &mut resumed] {
        let WatchMessage::Change(live) = next_watched(stream).await else {
            panic!("expected a live change")
        };
        assert_eq!(
            (live.user_id.as_str(), live.state()),
            (third.as_str(), Pending)
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn watch_readiness_by_external_id_sees_only_that_users_changes() {
    let app = TestApp::spawn().await;
    let external_id = format!("ext-{}", new_id());
    let (first, second) = two_users_become_ready(&app, &external_id).await;

    let mut stream = watch(
        &app,
        pb::WatchReadinessRequest {
            start: StartPosition::Beginning.into(),
            external_id: external_id.clone(),
            ..Default::default()
        },
    )
    .await;
    let stored = changes_until_caught_up(&mut stream).await;
    use ReadinessState::{Pending, Ready, Unspecified};
    assert_eq!(
        moves(&stored),
        vec![
            (first.clone(), Unspecified, Pending),
            (first.clone(), Pending, Ready)
        ]
    );

    // Live: the other user's change is passed over, this user's arrives.
    let (other_account, first_account) = (new_id(), new_id());
    app.deliver_ok(&body::failed(&second, &other_account)).await;
    app.deliver_ok(&body::connected(&first, &first_account))
        .await;
    let WatchMessage::Change(live) = next_watched(&mut stream).await else {
        panic!("expected a live change")
    };
    assert_eq!(
        (live.user_id.as_str(), live.previous_state(), live.state()),
        (first.as_str(), Ready, Pending)
    );

    let unknown = app
        .readiness_client()
        .await
        .watch_readiness(pb::WatchReadinessRequest {
            start: StartPosition::Beginning.into(),
            external_id: format!("nobody-{}", new_id()),
            ..Default::default()
        })
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    app.stop().await;
}

/// The report ids of the events up to the caught-up marker.
async fn reports_until_caught_up(
    stream: &mut Streaming<pb::StreamReportEventsResponse>,
) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    let wait = async {
        loop {
            let message = stream.message().await.unwrap().unwrap().message.unwrap();
            match message {
                ReportMessage::ReportGenerated(event) => {
                    seen.push((event.report.unwrap().argyle_report_id, event.cursor))
                }
                ReportMessage::CaughtUp(_) => return,
                ReportMessage::Heartbeat(_) => {}
                ReportMessage::ReportUpdated(update) => {
                    panic!("an update without include_updates: {update:?}")
                }
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .expect("caught up in time");
    seen
}

#[tokio::test]
async fn after_cursor_wins_over_the_start_position_on_both_streams() {
    let app = TestApp::spawn().await;
    let user = new_id();
    let tag = new_id();
    let ids: Vec<String> = (0..3).map(|i| format!("{tag}-{i}")).collect();
    for id in &ids {
        app.deliver_ok(&body::generated(&user, "voie", Some(id)))
            .await;
    }
    let reports = app.report_client().await;
    let open = |request: pb::StreamReportEventsRequest| {
        let mut reports = reports.clone();
        async move {
            reports
                .stream_report_events(request)
                .await
                .unwrap()
                .into_inner()
        }
    };
    let all = reports_until_caught_up(
        &mut open(pb::StreamReportEventsRequest {
            start: StartPosition::Beginning.into(),
            user_id: user.clone(),
            ..Default::default()
        })
        .await,
    )
    .await;
    assert_eq!(
        all.iter().map(|(id, _)| id).collect::<Vec<_>>(),
        ids.iter().collect::<Vec<_>>()
    );
    let after_first = all[0].1.clone();

    for start in [StartPosition::Beginning, StartPosition::Now] {
        let mut stream = open(pb::StreamReportEventsRequest {
            start: start.into(),
            after_cursor: after_first.clone(),
            user_id: user.clone(),
            ..Default::default()
        })
        .await;
        let seen = reports_until_caught_up(&mut stream).await;
        assert_eq!(
            seen.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            ids[1..].iter().collect::<Vec<_>>(),
            "StreamReportEvents with {start:?} and a cursor starts after the cursor"
        );
    }

    let (first, _) = two_users_become_ready(&app, &format!("ext-{}", new_id())).await;
    let changes = changes_until_caught_up(
        &mut watch(
            &app,
            pb::WatchReadinessRequest {
                start: StartPosition::Beginning.into(),
                user_id: first.clone(),
                ..Default::default()
            },
        )
        .await,
    )
    .await;
    assert_eq!(changes.len(), 2);
    for start in [StartPosition::Beginning, StartPosition::Now] {
        let mut stream = watch(
            &app,
            pb::WatchReadinessRequest {
                start: start.into(),
                after_cursor: changes[0].cursor.clone(),
                user_id: first.clone(),
                ..Default::default()
            },
        )
        .await;
        let seen = changes_until_caught_up(&mut stream).await;
        assert_eq!(
            seen.iter().map(|c| &c.event_id).collect::<Vec<_>>(),
            vec![&changes[1].event_id],
            "WatchReadiness with {start:?} and a cursor starts after the cursor"
        );
    }
    app.stop().await;
}
