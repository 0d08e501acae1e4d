//! The read model and cursor-consistent reads: every change to an answer reaches a cached view
//! (through the log), the cache keeps its bound, starts cold after a restart, never answers
//! older than its cursor while two replicas ingest, and `min_cursor` reads on one replica what a
//! stream showed from another, with its three errors.

use std::time::{Duration, Instant};

use readiness::core::Cursor;
use readiness::domain::UserId;
use readiness::domain::events::{DomainEvent, LoggedEvent};
use readiness::grpc::pb::{self, ReadinessState};
use readiness::store::entities::event;
use sea_orm::{ActiveValue::Set, EntityTrait, QueryOrder};
use tonic::Code;

use crate::helpers::{TestApp, body, new_id};

const PATIENCE: Duration = Duration::from_secs(30);

/// `GetUserReadiness` by user id, at or after `min_cursor` (empty: any).
fn by_id(user: &str, min_cursor: &str) -> pb::GetUserReadinessRequest {
    pb::GetUserReadinessRequest {
        user: Some(pb::get_user_readiness_request::User::UserId(user.into())),
        min_cursor: min_cursor.into(),
    }
}

async fn read(app: &TestApp, user: &str, min_cursor: &str) -> pb::GetUserReadinessResponse {
    app.readiness_client()
        .await
        .get_user_readiness(by_id(user, min_cursor))
        .await
        .unwrap()
        .into_inner()
}

/// The end of the log, as a list answer (read from the database) reports it.
async fn log_end(app: &TestApp) -> String {
    app.readiness_client()
        .await
        .list_users(pb::ListUsersRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .cursor
}

fn position(cursor: &str) -> i64 {
    Cursor::decode(cursor)
        .unwrap_or_else(|| panic!("{cursor:?} is a cursor"))
        .0
}

fn synced_at(answer: &pb::GetUserReadinessResponse) -> String {
    let synced = answer.user.as_ref().unwrap().accounts[0]
        .last_synced_at
        .unwrap();
    chrono::DateTime::from_timestamp(synced.seconds, synced.nanos as u32)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test]
async fn a_newer_sync_time_that_changes_no_state_still_reaches_the_cached_view() {
    let app = TestApp::spawn().await;
    let (user, account) = (new_id(), new_id());
    app.deliver_ok(&body::connected_at(&user, &account, "2024-01-08T12:00:00Z"))
        .await;
    app.deliver_ok(&body::ready(&user, &[(&account, "2024-01-08T13:00:00Z")]))
        .await;
    let first = read(&app, &user, &log_end(&app).await).await;
    assert_eq!(synced_at(&first), "2024-01-08T13:00:00Z");
    assert!(app.core.cached_user(user.parse().unwrap()).is_some());

    // Routine refresh: still READY, the account still synced; only the time moves.
    app.deliver_ok(&body::ready(&user, &[(&account, "2024-01-09T13:00:00Z")]))
        .await;
    let after = log_end(&app).await;
    let second = read(&app, &user, &after).await;

    assert_eq!(synced_at(&second), "2024-01-09T13:00:00Z");
    assert!(position(&second.cursor) >= position(&after));
    assert!(position(&second.cursor) > position(&first.cursor));
    app.stop().await;
}

#[tokio::test]
async fn a_read_right_after_a_webhooks_2xx_sees_the_delivery_even_when_the_view_was_cached() {
    let app = TestApp::spawn().await;
    let (user, account) = (new_id(), new_id());
    let mut client = app.readiness_client().await;
    for n in 0..50 {
        let [connected, synced] = round(&user, &account, n);
        app.deliver_ok(&connected).await;
        let answer = client.get_user_readiness(by_id(&user, "")).await.unwrap();
        let state = answer.into_inner().user.unwrap().state();
        assert_eq!(
            state,
            ReadinessState::Pending,
            "round {n}, after the reconnection"
        );
        app.deliver_ok(&synced).await;
        let answer = client.get_user_readiness(by_id(&user, "")).await.unwrap();
        let state = answer.into_inner().user.unwrap().state();
        assert_eq!(state, ReadinessState::Ready, "round {n}, after the sync");
    }
    assert!(app.core.cached_user(user.parse().unwrap()).is_some());
    app.stop().await;
}

#[tokio::test]
async fn an_external_id_reported_later_finds_a_cached_user() {
    let app = TestApp::spawn().await;
    let (user, account) = (new_id(), new_id());
    app.deliver_ok(&body::connected(&user, &account)).await;
    read(&app, &user, "").await;
    let lookup = |external: &str, min_cursor: String| pb::GetUserReadinessRequest {
        user: Some(pb::get_user_readiness_request::User::ExternalId(
            external.into(),
        )),
        min_cursor,
    };
    let external = format!("applicant-{user}");
    let unknown = app
        .readiness_client()
        .await
        .get_user_readiness(lookup(&external, String::new()))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    app.deliver_ok(&body::ready_with_external_id(
        &user,
        Some(&external),
        &[(&account, "2024-01-08T13:00:00Z")],
    ))
    .await;
    let found = app
        .readiness_client()
        .await
        .get_user_readiness(lookup(&external, log_end(&app).await))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.user.unwrap().user_id, user);
    app.stop().await;
}

#[tokio::test]
async fn the_read_model_keeps_at_most_read_cache_users_views() {
    let app = TestApp::spawn_with(|settings| settings.read_cache_users = 10).await;
    let users: Vec<String> = (0..40).map(|_| new_id()).collect();
    for user in &users {
        app.deliver_ok(&body::connected(user, &new_id())).await;
    }
    for user in &users {
        read(&app, user, "").await;
    }
    let stats = app.core.read_model_stats();
    assert!(stats.users <= 10, "{stats:?}");
    assert!(stats.users > 0, "the model keeps views at all: {stats:?}");
    // Every answer is still right, cached or not.
    for user in &users {
        assert_eq!(
            read(&app, user, "").await.user.unwrap().state(),
            ReadinessState::Pending
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn read_cache_users_0_turns_the_read_model_off_and_answers_stay_current() {
    let app = TestApp::spawn_with(|settings| settings.read_cache_users = 0).await;
    let (user, account) = (new_id(), new_id());
    app.deliver_ok(&body::connected_at(&user, &account, "2024-01-08T12:00:00Z"))
        .await;
    let pending = read(&app, &user, "").await;
    assert_eq!(pending.user.unwrap().state(), ReadinessState::Pending);

    app.deliver_ok(&body::ready(&user, &[(&account, "2024-01-08T13:00:00Z")]))
        .await;
    let end = log_end(&app).await;
    let ready = read(&app, &user, &end).await;
    assert_eq!(ready.user.unwrap().state(), ReadinessState::Ready);
    assert!(
        !ready.cursor.is_empty(),
        "an answer still carries its cursor"
    );
    let stats = app.core.read_model_stats();
    assert_eq!((stats.users, stats.reports), (0, 0), "nothing is cached");
    app.stop().await;
}

#[tokio::test]
async fn a_restart_starts_with_an_empty_read_model_and_answers_the_same() {
    let app = TestApp::spawn().await;
    let users: Vec<String> = (0..5).map(|_| new_id()).collect();
    for user in &users {
        let account = new_id();
        app.deliver_ok(&body::connected_at(user, &account, "2024-01-08T12:00:00Z"))
            .await;
        app.deliver_ok(&body::ready(user, &[(&account, "2024-01-08T13:00:00Z")]))
            .await;
    }
    let mut before = Vec::new();
    let end = log_end(&app).await;
    for user in &users {
        before.push(read(&app, user, &end).await.user);
    }
    assert_eq!(app.core.read_model_stats().users, 5);

    let app = app.restart().await;
    assert_eq!(app.core.read_model_stats().users, 0, "cold after a restart");
    for (user, earlier) in users.iter().zip(before) {
        assert_eq!(read(&app, user, "").await.user, earlier);
    }
    assert_eq!(app.core.read_model_stats().users, 5);
    app.stop().await;
}

#[tokio::test]
async fn a_malformed_min_cursor_is_invalid_and_one_beyond_the_log_is_a_failed_precondition() {
    let app = TestApp::spawn().await;
    let user = new_id();
    app.deliver_ok(&body::connected(&user, &new_id())).await;
    let mut client = app.readiness_client().await;

    let malformed = client
        .get_user_readiness(by_id(&user, "not-a-cursor"))
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert!(
        malformed.message().starts_with("min_cursor:"),
        "{malformed:?}"
    );

    let beyond = Cursor(position(&log_end(&app).await) + 1_000).encode();
    let ahead = client
        .get_user_readiness(by_id(&user, &beyond))
        .await
        .unwrap_err();
    assert_eq!(ahead.code(), Code::FailedPrecondition, "{ahead:?}");
    let list = client
        .list_users(pb::ListUsersRequest {
            min_cursor: beyond.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(list.code(), Code::FailedPrecondition, "{list:?}");
    let report = app
        .report_client()
        .await
        .list_reports(pb::ListReportsRequest {
            min_cursor: "%%%".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(report.code(), Code::InvalidArgument, "{report:?}");
    app.stop().await;
}

/// Appends an internal entry behind the service's back: committed, but no commit of the service
/// wakes its follower (no local signal, no NOTIFY). Returns its position.
async fn append_unannounced(app: &TestApp) -> i64 {
    let entry = DomainEvent::ViewChanged {
        user: UserId(uuid::Uuid::new_v4()),
        reports: vec![],
        external_ids: vec![],
    };
    event::Entity::insert(event::ActiveModel {
        kind: Set(entry.kind().to_owned()),
        user_id: Set(entry.user().to_string()),
        payload: Set(serde_json::to_string(&entry).unwrap()),
        recorded_at: Set(chrono::Utc::now()),
        ..Default::default()
    })
    .exec(app.core.db())
    .await
    .unwrap()
    .last_insert_id
}

#[tokio::test]
async fn a_replica_behind_answers_deadline_exceeded_or_unavailable_whichever_comes_first() {
    // A follower that only moves when this process commits.
    let app = TestApp::spawn_with(|settings| {
        settings.stream_poll_ms = 3_600_000;
        settings.read_wait_max_ms = 300;
    })
    .await;
    let user = new_id();
    app.deliver_ok(&body::connected(&user, &new_id())).await;
    // On PostgreSQL the delivery's own NOTIFY wakes the follower once more, later: let it pass.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cursor = Cursor(append_unannounced(&app).await).encode();
    let mut client = app.readiness_client().await;

    // The caller's deadline first.
    let mut request = tonic::Request::new(by_id(&user, &cursor));
    request.set_timeout(Duration::from_millis(150));
    let started = Instant::now();
    let late = client.get_user_readiness(request).await.unwrap_err();
    assert_eq!(late.code(), Code::DeadlineExceeded, "{late:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // The replica's own limit first.
    let mut request = tonic::Request::new(by_id(&user, &cursor));
    request.set_timeout(Duration::from_secs(20));
    let behind = client.get_user_readiness(request).await.unwrap_err();
    assert_eq!(behind.code(), Code::Unavailable, "{behind:?}");
    assert!(behind.message().contains("replica behind"), "{behind:?}");

    // Once the follower moves (any local commit wakes it), the same read is answered.
    app.deliver_ok(&body::connected(&new_id(), &new_id())).await;
    let answered = read(&app, &user, &cursor).await;
    assert!(position(&answered.cursor) >= position(&cursor));
    app.stop().await;
}

/// The states a user had at or after position `at`, from the log: the one it was in at `at`,
/// and every one it entered later.
fn states_from(log: &[LoggedEvent], user: UserId, at: i64) -> Vec<ReadinessState> {
    let mut states = Vec::new();
    let mut current = None;
    for logged in log {
        let DomainEvent::ReadinessChanged { user: who, to, .. } = &logged.event else {
            continue;
        };
        if *who != user {
            continue;
        }
        let state = ReadinessState::from_str_name(&format!(
            "READINESS_STATE_{}",
            to.as_str().to_ascii_uppercase()
        ))
        .unwrap();
        if logged.seq <= at {
            current = Some(state);
        } else {
            states.push(state);
        }
    }
    states.extend(current);
    states
}

async fn whole_log(app: &TestApp) -> Vec<LoggedEvent> {
    event::Entity::find()
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
        .collect()
}

/// One round of changes to `user`: reconnected (PENDING), then synced (READY).
fn round(user: &str, account: &str, n: u32) -> [String; 2] {
    let connected = format!("2024-02-01T{:02}:{:02}:00Z", n / 60, n % 60);
    let synced = format!("2024-02-01T{:02}:{:02}:30Z", n / 60, n % 60);
    [
        body::connected_at(user, account, &connected),
        body::ready(user, &[(account, &synced)]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn while_two_replicas_ingest_no_answer_is_older_than_its_cursor_and_the_cache_ends_exact() {
    let a = TestApp::spawn().await;
    // On SQLite (one process) the second "replica" is the same service.
    let b = if a.on_postgres() {
        Some(a.replica(|_| {}).await)
    } else {
        None
    };
    let reader = b.as_ref().unwrap_or(&a);
    let users: Vec<(String, String)> = (0..12).map(|_| (new_id(), new_id())).collect();
    for (user, account) in &users {
        a.deliver_ok(&body::connected(user, account)).await;
    }

    let writers: Vec<_> = users
        .chunks(3)
        .enumerate()
        .map(|(i, chunk)| {
            let target = if i % 2 == 0 { &a } else { reader };
            let (client, url) = (target.client.clone(), target.url("/webhooks/argyle"));
            let chunk = chunk.to_vec();
            tokio::spawn(async move {
                for n in 0..15 {
                    for (user, account) in &chunk {
                        for delivery in round(user, account, n) {
                            let sent = client
                                .post(&url)
                                .header("content-type", "application/json")
                                .header(
                                    "x-argyle-signature",
                                    readiness::domain::signature::sign(
                                        &readiness::domain::signature::Secret::new(
                                            crate::helpers::SECRET,
                                        ),
                                        delivery.as_bytes(),
                                    ),
                                )
                                .body(delivery)
                                .send()
                                .await
                                .unwrap();
                            assert_eq!(sent.status(), 200);
                        }
                    }
                }
            })
        })
        .collect();

    // One sequential reader on the other replica, recording every answer.
    let mut answers = Vec::new();
    let mut client = reader.readiness_client().await;
    let mut last_cursor = 0;
    let mut n = 0usize;
    while writers.iter().any(|writer| !writer.is_finished()) || n < 50 {
        let (user, _) = &users[n % users.len()];
        n += 1;
        let answer = client
            .get_user_readiness(by_id(user, ""))
            .await
            .unwrap()
            .into_inner();
        let cursor = position(&answer.cursor);
        assert!(
            cursor >= last_cursor,
            "a cursor went back: {last_cursor} then {cursor}"
        );
        last_cursor = cursor;
        answers.push((user.clone(), answer.user.unwrap().state(), cursor));
    }
    for writer in writers {
        writer.await.unwrap();
    }

    let log = whole_log(&a).await;
    for (user, state, cursor) in &answers {
        let possible = states_from(&log, user.parse().unwrap(), *cursor);
        assert!(
            possible.contains(state),
            "user {user} answered {state:?} at cursor {cursor}; the log allows {possible:?}"
        );
    }
    assert!(answers.len() >= 50);

    // Quiet: once the reader's follower reached the end, every cached view is a fresh read.
    let end = log.last().unwrap().seq;
    let deadline = Instant::now() + PATIENCE;
    while reader.core.read_model_stats().position < end {
        assert!(
            Instant::now() < deadline,
            "the follower never reached {end}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cached = reader.core.cached_users();
    assert!(!cached.is_empty());
    for user in cached {
        let view = reader.core.cached_user(user).unwrap();
        let fresh = reader.core.stored_user(user).await.unwrap().unwrap();
        assert_eq!(*view, fresh, "the cached view of {user} is stale");
    }
    if let Some(b) = b {
        b.stop().await;
    }
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_with_the_cursor_of_an_event_streamed_from_one_replica_sees_it_on_the_other() {
    let a = TestApp::spawn().await;
    // The other replica's follower polls rarely: only NOTIFY brings it up (a min_cursor read waits for it).
    let b = if a.on_postgres() {
        Some(
            a.replica(|settings| settings.stream_poll_ms = 3_600_000)
                .await,
        )
    } else {
        None
    };
    let reader = b.as_ref().unwrap_or(&a);
    let (user, account) = (new_id(), new_id());
    for delivery in round(&user, &account, 0) {
        a.deliver_ok(&delivery).await; // READY
    }
    read(reader, &user, &log_end(&a).await).await; // cached on the reader from the start

    let mut changes = a
        .readiness_client()
        .await
        .watch_readiness(pb::WatchReadinessRequest {
            start: pb::StartPosition::Now.into(),
            user_id: user.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut client = reader.readiness_client().await;
    let mut stale = 0;
    let mut seen = 0;
    for n in 1..=100u32 {
        for delivery in round(&user, &account, n) {
            a.deliver_ok(&delivery).await;
            // The change this delivery made, as the stream on `a` shows it.
            let change = loop {
                let message = tokio::time::timeout(PATIENCE, changes.message())
                    .await
                    .expect("a change in time")
                    .unwrap()
                    .unwrap();
                if let Some(pb::watch_readiness_response::Message::Change(change)) = message.message
                {
                    break change;
                }
            };
            seen += 1;
            let answer = client
                .get_user_readiness(by_id(&user, &change.cursor))
                .await
                .unwrap()
                .into_inner();
            if answer.user.unwrap().state != change.state {
                stale += 1;
            }
            assert!(position(&answer.cursor) >= position(&change.cursor));
        }
    }
    assert_eq!(seen, 200);
    assert_eq!(stale, 0, "answers older than the streamed change");
    if let Some(b) = b {
        b.stop().await;
    }
    a.stop().await;
}
