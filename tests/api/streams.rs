//! StreamReportEvents and WatchReadiness: catch-up, caught-up marker, live events, resume,
//! filters, heartbeats, bad cursors, slow subscribers, shutdown, concurrency and replicas.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use readiness::core::{Start, StreamItem};
use readiness::domain::UserId;
use readiness::domain::events::{ALL_KINDS, DomainEvent, LoggedEvent};
use readiness::domain::signature::{Secret, sign};
use readiness::grpc::pb::stream_report_events_response::Message;
use readiness::grpc::pb::watch_readiness_response::Message as WatchMessage;
use readiness::grpc::pb::{self, ReadinessState, ReportType, StartPosition};
use readiness::store::Store;
use readiness::store::entities::event;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use tonic::{Code, Streaming};

use crate::helpers::{SECRET, TestApp, body, new_id};

/// Long enough for anything that should happen; only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(20);

fn from_beginning() -> pb::StreamReportEventsRequest {
    pb::StreamReportEventsRequest {
        start: StartPosition::Beginning.into(),
        ..Default::default()
    }
}

async fn open(
    app: &TestApp,
    request: pb::StreamReportEventsRequest,
) -> Streaming<pb::StreamReportEventsResponse> {
    app.report_client()
        .await
        .stream_report_events(request)
        .await
        .expect("stream opens")
        .into_inner()
}

async fn next(stream: &mut Streaming<pb::StreamReportEventsResponse>) -> Message {
    tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("a message in time")
        .expect("the stream is healthy")
        .expect("the stream is open")
        .message
        .unwrap()
}

/// The next report event, skipping heartbeats (which alone never satisfy the wait).
async fn next_report(
    stream: &mut Streaming<pb::StreamReportEventsResponse>,
) -> pb::ReportGenerated {
    let wait = async {
        loop {
            match next(stream).await {
                Message::ReportGenerated(event) => return event,
                Message::Heartbeat(_) => {}
                Message::CaughtUp(marker) => panic!("unexpected caught-up marker {marker:?}"),
                Message::ReportUpdated(update) => {
                    panic!("an update without include_updates: {update:?}")
                }
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .expect("a report event in time")
}

/// The cursor of the caught-up marker, skipping heartbeats.
async fn caught_up(stream: &mut Streaming<pb::StreamReportEventsResponse>) -> String {
    let wait = async {
        loop {
            match next(stream).await {
                Message::CaughtUp(marker) => return marker.cursor,
                Message::Heartbeat(_) => {}
                Message::ReportGenerated(event) => {
                    panic!("expected the caught-up marker, got {event:?}")
                }
                Message::ReportUpdated(update) => {
                    panic!("expected the caught-up marker, got {update:?}")
                }
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .expect("the caught-up marker in time")
}

fn argyle_ids(events: &[pb::ReportGenerated]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.report.as_ref().unwrap().argyle_report_id.clone())
        .collect()
}

async fn generate(app: &TestApp, user: &str, ids: &[String]) {
    for id in ids {
        app.deliver_ok(&body::generated(user, "voie", Some(id)))
            .await;
    }
}

fn ids(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test]
async fn a_report_stream_catches_up_marks_it_once_then_follows_live_events() {
    let app = TestApp::spawn().await;
    let user = new_id();
    let stored = ids("stored", 3);
    generate(&app, &user, &stored).await;

    let mut stream = open(&app, from_beginning()).await;
    let mut received = Vec::new();
    for _ in 0..3 {
        received.push(next_report(&mut stream).await);
    }
    assert_eq!(argyle_ids(&received), stored);
    let marker = caught_up(&mut stream).await;
    assert_eq!(
        marker, received[2].cursor,
        "the marker carries the position of the last event"
    );

    let live = ids("live", 2);
    generate(&app, &user, &live).await;
    let live_events = vec![
        next_report(&mut stream).await,
        next_report(&mut stream).await,
    ];
    assert_eq!(argyle_ids(&live_events), live);
    let report = live_events[0].report.as_ref().unwrap();
    assert_eq!(
        (report.user_id.as_str(), report.r#type()),
        (user.as_str(), ReportType::Voie)
    );
    assert!(
        live_events[0].event_id.parse::<i64>().unwrap()
            < live_events[1].event_id.parse::<i64>().unwrap()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_stream_started_now_sees_only_later_events() {
    let app = TestApp::spawn().await;
    let user = new_id();
    generate(&app, &user, &ids("old", 2)).await;
    let mut stream = open(
        &app,
        pb::StreamReportEventsRequest {
            start: StartPosition::Now.into(),
            ..Default::default()
        },
    )
    .await;
    caught_up(&mut stream).await;
    generate(&app, &user, &ids("new", 1)).await;
    assert_eq!(argyle_ids(&[next_report(&mut stream).await]), ids("new", 1));
    app.stop().await;
}

#[tokio::test]
async fn a_stream_resumes_after_a_disconnect_with_no_gap_and_no_duplicate() {
    let app = TestApp::spawn().await;
    let user = new_id();
    let all = ids("r", 6);
    generate(&app, &user, &all[..4]).await;

    let mut stream = open(&app, from_beginning()).await;
    let first = next_report(&mut stream).await;
    let second = next_report(&mut stream).await;
    drop(stream);
    generate(&app, &user, &all[4..]).await;

    let mut resumed = open(
        &app,
        pb::StreamReportEventsRequest {
            after_cursor: second.cursor.clone(),
            ..Default::default()
        },
    )
    .await;
    let mut rest = Vec::new();
    for _ in 0..4 {
        rest.push(next_report(&mut resumed).await);
    }
    caught_up(&mut resumed).await;
    let mut seen = argyle_ids(&[first, second]);
    seen.extend(argyle_ids(&rest));
    assert_eq!(seen, all);
    app.stop().await;
}

#[tokio::test]
async fn a_stream_resumes_after_a_full_server_restart() {
    let app = TestApp::spawn().await;
    let user = new_id();
    let all = ids("restart", 5);
    generate(&app, &user, &all[..3]).await;
    let mut stream = open(&app, from_beginning()).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_report(&mut stream).await);
    }
    let cursor = caught_up(&mut stream).await;

    let app = app.restart().await;
    // The old stream was ended by the shutdown, telling the client to resume.
    let ended = tokio::time::timeout(PATIENCE, stream.message())
        .await
        .unwrap();
    assert_eq!(ended.unwrap_err().code(), Code::Unavailable);
    generate(&app, &user, &all[3..]).await;

    let mut resumed = open(
        &app,
        pb::StreamReportEventsRequest {
            after_cursor: cursor,
            ..Default::default()
        },
    )
    .await;
    seen.push(next_report(&mut resumed).await);
    seen.push(next_report(&mut resumed).await);
    assert_eq!(argyle_ids(&seen), all);
    app.stop().await;
}

#[tokio::test]
async fn report_streams_deliver_only_what_their_filters_select() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (new_id(), new_id());
    let account = new_id();
    app.deliver_ok(&body::connected(&bob, &account)).await;
    app.deliver_ok(&body::ready_with_external_id(
        &bob,
        Some("bob-ext"),
        &[(&account, "2024-01-08T12:00:00Z")],
    ))
    .await;
    for (user, kind, id) in [
        (&alice, "voie", "a-voie"),
        (&bob, "voie", "b-voie"),
        (&alice, "voe", "a-voe"),
        (&bob, "voa-2031", "b-unknown"),
        (&bob, "voe", "b-voe"),
    ] {
        app.deliver_ok(&body::generated(user, kind, Some(id))).await;
    }

    let cases = [
        (
            pb::StreamReportEventsRequest {
                user_id: alice.clone(),
                ..from_beginning()
            },
            vec!["a-voie", "a-voe"],
        ),
        (
            pb::StreamReportEventsRequest {
                external_id: "bob-ext".into(),
                ..from_beginning()
            },
            vec!["b-voie", "b-unknown", "b-voe"],
        ),
        (
            pb::StreamReportEventsRequest {
                r#type: ReportType::Voe.into(),
                ..from_beginning()
            },
            vec!["a-voe", "b-voe"],
        ),
        (
            pb::StreamReportEventsRequest {
                r#type: ReportType::Other.into(),
                ..from_beginning()
            },
            vec!["b-unknown"],
        ),
        (
            pb::StreamReportEventsRequest {
                type_name: "voa-2031".into(),
                ..from_beginning()
            },
            vec!["b-unknown"],
        ),
        (
            pb::StreamReportEventsRequest {
                user_id: bob.clone(),
                r#type: ReportType::Voie.into(),
                ..from_beginning()
            },
            vec!["b-voie"],
        ),
    ];
    for (request, expected) in cases {
        let description = format!("{request:?}");
        let mut stream = open(&app, request).await;
        let mut seen = Vec::new();
        loop {
            match next(&mut stream).await {
                Message::ReportGenerated(event) => seen.push(event),
                Message::CaughtUp(_) => break,
                Message::Heartbeat(_) => {}
                Message::ReportUpdated(update) => {
                    panic!("an update without include_updates: {update:?}")
                }
            }
        }
        assert_eq!(argyle_ids(&seen), expected, "{description}");
    }
    app.stop().await;
}

#[tokio::test]
async fn watch_readiness_streams_changes_filtered_by_user_and_state() {
    let app = TestApp::spawn().await;
    let (user, other, account, other_account) = (new_id(), new_id(), new_id(), new_id());
    let mut client = app.readiness_client().await;
    let mut into_ready = client
        .watch_readiness(pb::WatchReadinessRequest {
            start: StartPosition::Now.into(),
            states: vec![ReadinessState::Ready.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut for_user = client
        .watch_readiness(pb::WatchReadinessRequest {
            start: StartPosition::Now.into(),
            user_id: user.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    app.deliver_ok(&body::connected(&other, &other_account))
        .await;
    app.deliver_ok(&body::connected(&user, &account)).await;
    app.deliver_ok(&body::ready(&user, &[(&account, "2024-01-08T12:00:00Z")]))
        .await;

    let mut changes = Vec::new();
    // Heartbeats are far apart (15 s by default), so these loops end by PATIENCE at worst.
    while changes.len() < 2 {
        match tokio::time::timeout(PATIENCE, for_user.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .message
            .unwrap()
        {
            WatchMessage::Change(change) => changes.push(change),
            WatchMessage::CaughtUp(_) | WatchMessage::Heartbeat(_) => {}
        }
    }
    assert!(changes.iter().all(|c| c.user_id == user));
    assert_eq!(
        changes
            .iter()
            .map(|c| (c.previous_state(), c.state()))
            .collect::<Vec<_>>(),
        vec![
            (ReadinessState::Unspecified, ReadinessState::Pending),
            (ReadinessState::Pending, ReadinessState::Ready)
        ]
    );
    loop {
        match tokio::time::timeout(PATIENCE, into_ready.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .message
            .unwrap()
        {
            WatchMessage::Change(change) => {
                assert_eq!(
                    (change.user_id.as_str(), change.state()),
                    (user.as_str(), ReadinessState::Ready)
                );
                assert_eq!(change.cursor, changes[1].cursor);
                break;
            }
            WatchMessage::CaughtUp(_) | WatchMessage::Heartbeat(_) => {}
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn idle_streams_send_heartbeats_whose_cursor_passes_filtered_out_events() {
    let app = TestApp::spawn_with(|settings| settings.stream_heartbeat_ms = 150).await;
    let (watched, other) = (new_id(), new_id());
    let mut stream = open(
        &app,
        pb::StreamReportEventsRequest {
            user_id: watched.clone(),
            ..from_beginning()
        },
    )
    .await;
    let start = caught_up(&mut stream).await;
    let Message::Heartbeat(first) = next(&mut stream).await else {
        panic!("expected a heartbeat")
    };
    assert_eq!(first.cursor, start);
    assert!(first.sent_at.is_some());

    generate(&app, &other, &ids("not-watched", 3)).await;
    let last_skipped = event::Entity::find()
        .order_by_desc(event::Column::Seq)
        .one(app.core.db())
        .await
        .unwrap()
        .unwrap()
        .seq;
    let past_them = readiness::core::Cursor(last_skipped).encode();
    let passed_over = async {
        loop {
            let Message::Heartbeat(beat) = next(&mut stream).await else {
                panic!("only heartbeats expected")
            };
            if beat.cursor == past_them {
                return beat.cursor;
            }
        }
    };
    let moved = tokio::time::timeout(PATIENCE, passed_over)
        .await
        .expect("a heartbeat whose cursor is past the filtered-out events");
    // Resumed from the heartbeat's cursor *without* the filter, the stream starts after the
    // events the filter passed over: the cursor itself skips them.
    generate(&app, &watched, &ids("watched", 1)).await;
    let mut resumed = open(
        &app,
        pb::StreamReportEventsRequest {
            after_cursor: moved,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        argyle_ids(&[next_report(&mut resumed).await]),
        ids("watched", 1)
    );
    app.stop().await;
}

#[tokio::test]
async fn malformed_missing_and_unservable_cursors_are_refused_clearly() {
    let app = TestApp::spawn().await;
    generate(&app, &new_id(), &ids("x", 1)).await;
    let mut client = app.report_client().await;
    let open_with = |request: pb::StreamReportEventsRequest| {
        let mut client = client.clone();
        async move {
            client
                .stream_report_events(request)
                .await
                .map(|_| ())
                .unwrap_err()
        }
    };

    let status = open_with(pb::StreamReportEventsRequest {
        after_cursor: "garbage".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("after_cursor:"),
        "{}",
        status.message()
    );

    let status = open_with(pb::StreamReportEventsRequest::default()).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("start:"));

    let ahead = readiness::core::Cursor(1_000_000_000).encode();
    let status = open_with(pb::StreamReportEventsRequest {
        after_cursor: ahead,
        ..Default::default()
    })
    .await;
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status
            .message()
            .contains("ahead of this service's event log"),
        "{}",
        status.message()
    );

    let status = open_with(pb::StreamReportEventsRequest {
        user_id: "nope".into(),
        ..from_beginning()
    })
    .await;
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = client
        .stream_report_events(pb::StreamReportEventsRequest {
            external_id: "unknown".into(),
            ..from_beginning()
        })
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    app.stop().await;
}

/// The process-wide count of subscribers that fell behind the broadcast and read the database.
async fn fallbacks(app: &TestApp) -> f64 {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter_map(|line| line.strip_prefix("readiness_stream_fallbacks_total "))
        .map(|value| value.parse::<f64>().unwrap())
        .sum()
}

#[tokio::test]
async fn a_stalled_subscriber_falls_back_to_the_database_without_holding_up_ingestion_or_losing_events()
 {
    let app = TestApp::spawn_with(|settings| settings.stream_broadcast_capacity = 8).await;
    let user = new_id();
    // A client with a tiny HTTP/2 stream window: once it stops reading, the server can send it
    // almost nothing more, so its subscriber blocks and the live broadcast runs past it.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc))
        .unwrap()
        .initial_stream_window_size(Some(1024))
        .connect()
        .await
        .unwrap();
    let mut stalled = pb::report_service_client::ReportServiceClient::new(channel)
        .stream_report_events(pb::StreamReportEventsRequest {
            start: StartPosition::Now.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    caught_up(&mut stalled).await;
    let mut watcher = open(
        &app,
        pb::StreamReportEventsRequest {
            start: StartPosition::Now.into(),
            ..Default::default()
        },
    )
    .await;
    caught_up(&mut watcher).await;
    let fallbacks_before = fallbacks(&app).await;

    // Long report ids make each event about 350 bytes on the wire: 400 of them are far more than
    // the window, the server's send buffer (one 32 KiB chunk), the subscriber's buffer (64
    // events) and the broadcast (8) hold together, while the stalled stream is not read at all.
    let all: Vec<String> = (0..400)
        .map(|i| format!("flood-{i:03}-{}", "x".repeat(200)))
        .collect();
    tokio::time::timeout(Duration::from_secs(120), generate(&app, &user, &all))
        .await
        .expect("ingestion is not blocked by a stalled subscriber");
    // Another subscriber is not held up either.
    let mut watched = Vec::new();
    for _ in 0..all.len() {
        watched.push(next_report(&mut watcher).await);
    }
    assert_eq!(argyle_ids(&watched), all);

    let mut received = Vec::new();
    for _ in 0..all.len() {
        received.push(next_report(&mut stalled).await);
    }
    assert_eq!(
        argyle_ids(&received),
        all,
        "every event, in order, no duplicates"
    );
    let ids: Vec<i64> = received
        .iter()
        .map(|event| event.event_id.parse().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "event ids strictly increase: {ids:?}"
    );
    let fallbacks_after = fallbacks(&app).await;
    assert!(
        fallbacks_after > fallbacks_before,
        "the stalled subscriber fell behind the broadcast and read the database \
         (readiness_stream_fallbacks_total {fallbacks_before} -> {fallbacks_after})"
    );
    app.stop().await;
}

#[tokio::test]
async fn shutdown_with_open_streams_ends_them_well_within_the_grace_period() {
    let app = TestApp::spawn_with(|settings| settings.shutdown_grace_secs = 5).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut stream = open(&app, from_beginning()).await;
        caught_up(&mut stream).await;
        streams.push(stream);
    }
    let started = std::time::Instant::now();
    // `stop` fails the test if `App::run` returns an error, as it does after a forced close.
    tokio::time::timeout(Duration::from_secs(5 + 5), app.stop())
        .await
        .expect("shutdown finished");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "nothing was in flight but open streams, yet shutdown took {took:?} of the 5 s grace"
    );
    for mut stream in streams {
        let end = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .unwrap();
        assert_eq!(end.unwrap_err().code(), Code::Unavailable);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_never_make_a_follower_skip_repeat_or_alter_an_event() {
    let app = TestApp::spawn().await;
    for round in 0..5 {
        let mut follower = app
            .core
            .subscribe(Start::Now, ALL_KINDS, Arc::new(|_| true))
            .await
            .unwrap();
        let start = match follower.recv().await.unwrap().unwrap() {
            StreamItem::CaughtUp(cursor) => cursor,
            other => panic!("expected caught-up, got {other:?}"),
        };

        let writers: Vec<_> = (0..8)
            .map(|_| {
                let core = app.core.clone();
                tokio::spawn(async move {
                    for _ in 0..25 {
                        let (user, account) = (new_id(), new_id());
                        for delivery in [
                            body::connected(&user, &account),
                            body::ready(&user, &[(&account, "2024-01-08T12:00:00Z")]),
                        ] {
                            let signature = sign(&Secret::new(SECRET), delivery.as_bytes());
                            let verified = readiness::domain::signature::verify(
                                &[Secret::new(SECRET)],
                                Some(signature.as_bytes()),
                                delivery.into_bytes(),
                            )
                            .unwrap();
                            core.ingest(verified).await.unwrap();
                        }
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }

        // As stored: the follower applies most of these as their commits handed them over, not
        // as read back, and must deliver exactly what a reader of the log gets.
        let committed: Vec<LoggedEvent> = event::Entity::find()
            .filter(event::Column::Seq.gt(start.0))
            .order_by_asc(event::Column::Seq)
            .all(app.core.db())
            .await
            .unwrap()
            .into_iter()
            .map(|row| LoggedEvent {
                seq: row.seq,
                recorded_at: row.recorded_at,
                event: serde_json::from_str(&row.payload).unwrap(),
            })
            .collect();
        // One deadline for the whole collection: heartbeats alone must not keep it waiting.
        let mut seen = Vec::new();
        let collect = async {
            while seen.len() < committed.len() {
                match follower.recv().await.unwrap().unwrap() {
                    StreamItem::Event(event) => seen.push(event),
                    StreamItem::Heartbeat(_) => {}
                    StreamItem::CaughtUp(_) => panic!("a second caught-up marker"),
                }
            }
        };
        let complete = tokio::time::timeout(PATIENCE, collect).await.is_ok();
        let seen: Vec<LoggedEvent> = seen.iter().map(|event| (**event).clone()).collect();
        let missing: Vec<i64> = committed
            .iter()
            .filter(|event| !seen.contains(event))
            .map(|event| event.seq)
            .collect();
        assert!(
            complete,
            "round {round}: the follower skipped {} committed events: {missing:?}",
            missing.len()
        );
        assert_eq!(
            seen, committed,
            "round {round}: every event exactly once, in order"
        );
        let positions: BTreeSet<i64> = seen.iter().map(|event| event.seq).collect();
        assert_eq!(positions.len(), seen.len());
        assert_eq!(
            committed.len(),
            8 * 25 * 4,
            "round {round}: 4 events per user"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn an_event_accepted_by_one_replica_reaches_streams_on_another() {
    let first = TestApp::spawn().await;
    if !first.on_postgres() {
        // Replicas share PostgreSQL; SQLite is the single-process deployment.
        first.stop().await;
        return;
    }
    // A poll interval far beyond the test's patience: only NOTIFY can deliver in time.
    let second = first
        .replica(|settings| settings.stream_poll_ms = 600_000)
        .await;
    let mut stream = open(
        &second,
        pb::StreamReportEventsRequest {
            start: StartPosition::Now.into(),
            ..Default::default()
        },
    )
    .await;
    caught_up(&mut stream).await;

    let user = new_id();
    generate(&first, &user, &ids("cross-replica", 1)).await;

    let event = tokio::time::timeout(Duration::from_secs(5), next_report(&mut stream))
        .await
        .expect("event crossed replicas");
    assert_eq!(event.report.unwrap().user_id, user);
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn a_replica_is_woken_by_the_log_notifications_of_others_and_not_by_its_own() {
    let app = TestApp::spawn().await;
    if !app.on_postgres() {
        // NOTIFY is PostgreSQL's; on SQLite every commit is this process's own.
        app.stop().await;
        return;
    }
    // Two processes' stores on one database: each has its own name in the notifications.
    let (this, other) = (
        Store::new(app.core.db().clone()),
        Store::new(app.core.db().clone()),
    );
    let wakes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listening = {
        let (notifications, wakes) = (this.log_notifications().unwrap(), wakes.clone());
        tokio::spawn(async move {
            notifications
                .listen(|| {
                    wakes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                })
                .await
        })
    };
    let woken = |count: usize| {
        let wakes = wakes.clone();
        async move {
            while wakes.load(std::sync::atomic::Ordering::SeqCst) < count {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    // Once when LISTEN is in place.
    tokio::time::timeout(PATIENCE, woken(1)).await.unwrap();

    for store in [&this, &other] {
        let user = UserId(uuid::Uuid::new_v4());
        let batch = store.begin_batch().await.unwrap();
        let event = DomainEvent::ViewChanged {
            user,
            reports: vec![],
            external_ids: vec![],
        };
        batch.append(&[event], chrono::Utc::now()).await.unwrap();
        batch.commit().await.unwrap();
    }
    // Notifications arrive in commit order: once the other's has woken the listener, its own
    // (committed first) would have too.
    tokio::time::timeout(PATIENCE, woken(2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(wakes.load(std::sync::atomic::Ordering::SeqCst), 2);
    listening.abort();
    app.stop().await;
}
