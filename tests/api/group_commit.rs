//! Group commit: deliveries that arrive while a commit is busy share the next transaction, each
//! sender is answered only after that transaction commits, and a delivery that makes the database
//! fail does not fail the others of its batch. The tests make a batch form for certain by holding
//! the deliveries table's write lock from another connection while the deliveries arrive, and
//! wait on the service's ingestion backlog (never on a timer) to know they have queued. On
//! PostgreSQL a deferred trigger also holds back a COMMIT itself, to show no answer precedes it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use readiness::core::IngestBacklog;

use readiness::store::entities::event;
use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, EntityTrait,
    TransactionTrait,
};
use serde_json::Value;
use tokio::task::JoinSet;

use readiness::grpc::pb;

use crate::helpers::{TestApp, body, new_id};

/// One committer, and patience while the table is locked.
async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

async fn spawn_app_with(adjust: impl FnOnce(&mut readiness::config::Settings)) -> TestApp {
    TestApp::spawn_with(|settings| {
        settings.ingest_committers = 1;
        settings.database_timeout_secs = 20;
        adjust(settings);
    })
    .await
}

/// Takes the write lock on `deliveries` in a transaction of another connection.
async fn hold_writes(app: &TestApp, other: &DatabaseConnection) -> DatabaseTransaction {
    let hold = other.begin().await.unwrap();
    let statement = if app.on_postgres() {
        "LOCK TABLE deliveries IN EXCLUSIVE MODE"
    } else {
        "DELETE FROM deliveries WHERE id < 0"
    };
    hold.execute_unprepared(statement).await.unwrap();
    hold
}

type Answered = (String, u16, Value);

/// Long enough for anything that should happen; only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(20);

/// Waits until the service's ingestion backlog satisfies `condition`.
async fn wait_for_backlog(app: &TestApp, what: &str, condition: impl Fn(IngestBacklog) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let backlog = app.core.ingest_backlog();
        if condition(backlog) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never happened: {what} (backlog {backlog:?})"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Holds the deliveries table from another connection, sends one delivery and waits until the
/// committer has taken it (its commit then waits for the lock), sends `queued` and waits until
/// they all queue behind that commit, checks that no sender has been answered and nothing is
/// stored yet, and releases the lock. Returns every answer: body, status and JSON.
async fn queue_behind_a_busy_commit(app: &TestApp, queued: Vec<String>) -> Vec<Answered> {
    let other = Database::connect(&app.database_url()).await.unwrap();
    let hold = hold_writes(app, &other).await;
    let answered = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    let send = |tasks: &mut JoinSet<Answered>, bodies: Vec<String>| {
        for body in bodies {
            let (request, answered) = (app.signed_request(body.clone()), answered.clone());
            tasks.spawn(async move {
                let response = request.send().await.expect("request sent");
                answered.fetch_add(1, Ordering::SeqCst);
                let status = response.status().as_u16();
                let answer = response.json().await.unwrap_or(Value::Null);
                (body, status, answer)
            });
        }
    };
    let no_answer_yet = || {
        assert_eq!(
            answered.load(Ordering::SeqCst),
            0,
            "no sender is answered before the commit that stores its delivery"
        );
    };
    // Each wait also ends early if a sender is answered, which fails the test at once.
    let answered_early = || answered.load(Ordering::SeqCst) > 0;
    send(&mut tasks, vec![body::connected(&new_id(), &new_id())]);
    wait_for_backlog(app, "the first delivery's commit waits for the lock", |b| {
        answered_early()
            || b == IngestBacklog {
                unanswered: 1,
                queued: 0,
            }
    })
    .await;
    no_answer_yet();
    let count = queued.len();
    send(&mut tasks, queued);
    wait_for_backlog(app, "the other deliveries queue behind it", |b| {
        answered_early()
            || b == IngestBacklog {
                unanswered: 1 + count,
                queued: count,
            }
    })
    .await;
    no_answer_yet();
    assert!(
        app.deliveries().await.is_empty(),
        "nothing is stored while the table is locked"
    );
    hold.rollback().await.unwrap();
    let mut answers = Vec::new();
    while let Some(answer) = tasks.join_next().await {
        answers.push(answer.unwrap());
    }
    other.close().await.ok();
    answers
}

/// How many events each commit appended (a batch's events share its commit time), ascending.
async fn events_per_commit(app: &TestApp) -> Vec<usize> {
    let mut per_commit: BTreeMap<String, usize> = BTreeMap::new();
    for row in event::Entity::find().all(app.core.db()).await.unwrap() {
        *per_commit.entry(row.recorded_at.to_rfc3339()).or_default() += 1;
    }
    let mut sizes: Vec<usize> = per_commit.into_values().collect();
    sizes.sort_unstable();
    sizes
}

/// Eight users' first connections queued behind a busy commit, with `ingest_batch_max` set to
/// `batch_max`: all are acknowledged; the events each commit appended (two per delivery: the
/// account's and the readiness change).
async fn eight_queued_behind_a_busy_commit(batch_max: usize) -> Vec<usize> {
    let app = spawn_app_with(|settings| settings.ingest_batch_max = batch_max).await;
    let queued: Vec<String> = (0..8)
        .map(|_| body::connected(&new_id(), &new_id()))
        .collect();
    for (body, status, _) in queue_behind_a_busy_commit(&app, queued).await {
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(app.deliveries().await.len(), 9);
    let per_commit = events_per_commit(&app).await;
    app.stop().await;
    per_commit
}

#[tokio::test]
async fn deliveries_that_queue_behind_a_busy_commit_share_one_transaction() {
    assert_eq!(
        eight_queued_behind_a_busy_commit(64).await,
        vec![2, 16],
        "the first delivery commits alone; the eight that queued behind it commit together"
    );
}

#[tokio::test]
async fn no_transaction_stores_more_deliveries_than_ingest_batch_max() {
    assert_eq!(
        eight_queued_behind_a_busy_commit(3).await,
        vec![2, 4, 6, 6],
        "the first alone, then the eight that queued as 3 + 3 + 2"
    );
}

#[tokio::test]
async fn every_change_of_a_batch_spanning_many_users_carries_the_batchs_one_moment() {
    let app = spawn_app().await;
    let users: Vec<String> = (0..6).map(|_| new_id()).collect();
    let mut queued: Vec<String> = users
        .iter()
        .map(|user| body::connected(user, &new_id()))
        .collect();
    // Two of them also get a report announced in the same batch.
    queued.extend(
        users[..2]
            .iter()
            .map(|user| body::generated(user, "voie", None)),
    );
    for (body, status, _) in queue_behind_a_busy_commit(&app, queued).await {
        assert_eq!(status, 200, "{body}");
    }

    let mut moments = std::collections::BTreeSet::new();
    for user in &users {
        let readiness = app.readiness(user).await;
        let since = readiness.since.unwrap();
        assert_eq!(readiness.updated_at.unwrap(), since);
        assert_eq!(readiness.accounts[0].first_seen_at.unwrap(), since);
        moments.insert((since.seconds, since.nanos));
    }
    for user in &users[..2] {
        let generated_at = app.reports_of(user).await[0].generated_at.unwrap();
        moments.insert((generated_at.seconds, generated_at.nanos));
    }
    for row in event::Entity::find().all(app.core.db()).await.unwrap() {
        if users.contains(&row.user_id) {
            moments.insert((
                row.recorded_at.timestamp(),
                row.recorded_at.timestamp_subsec_nanos() as i32,
            ));
        }
    }
    for row in app.deliveries().await {
        if row
            .user_id
            .as_ref()
            .is_some_and(|user| users.contains(user))
        {
            moments.insert((
                row.received_at.timestamp(),
                row.received_at.timestamp_subsec_nanos() as i32,
            ));
        }
    }
    assert_eq!(
        moments.len(),
        1,
        "since, updated_at, first_seen_at, generated_at, changed_at and received_at of one \
         batch: {moments:?}"
    );
    app.stop().await;
}

/// The process id of this database's one backend waiting for a lock, other than `not`, once
/// there is one.
async fn backend_waiting_for_a_lock(other: &DatabaseConnection, not: Option<i32>) -> i32 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let row = other
            .query_one_raw(sea_orm::Statement::from_string(
                other.get_database_backend(),
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND datname = current_database() AND pid <> pg_backend_pid() \
                 ORDER BY backend_start LIMIT 1",
            ))
            .await
            .unwrap();
        if let Some(pid) = row.map(|row| row.try_get::<i32>("", "pid").unwrap())
            && Some(pid) != not
        {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "no transaction waits for the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn terminate(other: &DatabaseConnection, pid: i32) {
    other
        .execute_unprepared(&format!("SELECT pg_terminate_backend({pid})"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_batch_whose_connection_is_lost_is_retried_one_delivery_per_transaction() {
    let app = spawn_app().await;
    if !app.on_postgres() {
        eprintln!("skipped: PostgreSQL only (a backend to terminate)");
        app.stop().await;
        return;
    }
    let other = Database::connect(&app.database_url()).await.unwrap();
    let hold = hold_writes(&app, &other).await;
    let send = |body: String| {
        let request = app.signed_request(body);
        tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
    };

    // A first delivery's commit waits for the lock; eight more queue behind it.
    let first = send(body::connected(&new_id(), &new_id()));
    let first_backend = backend_waiting_for_a_lock(&other, None).await;
    let batch: Vec<_> = (0..8)
        .map(|_| send(body::connected(&new_id(), &new_id())))
        .collect();
    wait_for_backlog(&app, "eight deliveries queue", |b| b.queued == 8).await;

    // The first one's connection is lost: alone in its transaction, it is answered 503.
    terminate(&other, first_backend).await;
    assert_eq!(first.await.unwrap(), 503, "a lone delivery that failed");

    // The eight go as one batch, which waits for the lock too; its connection is lost.
    let batch_backend = backend_waiting_for_a_lock(&other, Some(first_backend)).await;
    wait_for_backlog(&app, "the batch took all eight", |b| b.queued == 0).await;
    terminate(&other, batch_backend).await;
    // Retried one by one: the first retry waits for the lock on a new connection.
    backend_waiting_for_a_lock(&other, Some(batch_backend)).await;
    hold.rollback().await.unwrap();

    for sender in batch {
        assert_eq!(
            sender.await.unwrap(),
            200,
            "every delivery of the lost batch"
        );
    }
    other.close().await.ok();
    assert_eq!(app.deliveries().await.len(), 8);
    assert_eq!(
        events_per_commit(&app).await,
        vec![2; 8],
        "the eight were stored in eight transactions of their own"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_delivery_the_database_refuses_does_not_fail_the_rest_of_its_batch() {
    let app = spawn_app().await;
    let other = Database::connect(&app.database_url()).await.unwrap();
    let refuse_poison = if app.on_postgres() {
        other
            .execute_unprepared(
                "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF position('poison' in convert_from(NEW.body, 'UTF8')) > 0 THEN \
                 RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$",
            )
            .await
            .unwrap();
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON deliveries \
         FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
    } else {
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON deliveries \
         WHEN instr(CAST(NEW.body AS TEXT), 'poison') > 0 \
         BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
    };
    other.execute_unprepared(refuse_poison).await.unwrap();
    other.close().await.ok();

    let mut queued: Vec<String> = (0..4)
        .map(|_| body::connected(&new_id(), &new_id()))
        .collect();
    queued.push(body::connected(&new_id(), &new_id()).replace("readiness-test", "poison"));
    queued.extend((0..4).map(|_| body::connected(&new_id(), &new_id())));
    let mut statuses = BTreeMap::new();
    for (body, status, _) in queue_behind_a_busy_commit(&app, queued).await {
        statuses.insert(body.contains("poison"), status);
        if !body.contains("poison") {
            assert_eq!(status, 200, "{body}");
        }
    }
    assert_eq!(
        statuses.get(&true),
        Some(&503),
        "the refused delivery is answered 503, so Argyle retries it"
    );
    let stored = app.deliveries().await;
    assert_eq!(stored.len(), 9, "every other delivery is stored");
    assert!(
        stored
            .iter()
            .all(|row| !String::from_utf8_lossy(&row.body).contains("poison"))
    );
    // The nine queued together, so they formed one batch (as in the test above, where eight
    // such deliveries commit together). The poison failed that batch: each of the eight good
    // deliveries was then committed alone.
    assert_eq!(
        events_per_commit(&app).await,
        vec![2; 9],
        "the first delivery alone, then each good delivery of the failed batch alone"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_batch_applies_several_deliveries_for_one_user_and_answers_copies_of_a_body_as_duplicates()
 {
    let app = spawn_app().await;
    let (a, b) = (new_id(), new_id());
    let (user, rival) = (a.clone().min(b.clone()), a.max(b));
    let account = new_id();
    let connected = body::connected(&user, &account);
    let queued = vec![
        body::added(&user, &account),
        connected.clone(),
        connected.clone(),
        body::ready(&user, &[(&account, "2026-01-01T00:00:00Z")]),
        body::connected(&rival, &account),
    ];
    let verdicts: Vec<(String, u16, String)> = queue_behind_a_busy_commit(&app, queued)
        .await
        .into_iter()
        .map(|(body, status, answer)| {
            let verdict = answer["status"].as_str().unwrap_or("").to_owned();
            (body, status, verdict)
        })
        .collect();
    let of = |wanted: &str| -> Vec<(u16, String)> {
        verdicts
            .iter()
            .filter(|(body, ..)| body == wanted)
            .map(|(_, status, verdict)| (*status, verdict.clone()))
            .collect()
    };
    let mut copies = of(&connected);
    copies.sort();
    assert_eq!(
        copies,
        vec![(200, "applied".to_owned()), (200, "duplicate".to_owned())],
        "two copies of one body in one batch: one applied, one duplicate"
    );
    // Deliveries are applied in user-id order: the user owns the account by the time the rival
    // (a greater id) names it, so the rival is refused.
    assert_eq!(
        of(&body::connected(&rival, &account))[0].0,
        400,
        "{verdicts:?}"
    );
    assert_eq!(app.state(&user).await, pb::ReadinessState::Ready);
    assert_eq!(
        app.account_state(&user, &account).await,
        pb::AccountState::Synced
    );
    assert_eq!(app.deliveries().await.len(), 5, "one row per distinct body");
    app.stop().await;
}

#[tokio::test]
async fn a_sender_is_answered_only_once_the_commit_holding_its_delivery_has_finished() {
    let app = spawn_app().await;
    if !app.on_postgres() {
        // Holding back a COMMIT (not the statements before it) from outside needs PostgreSQL's
        // deferred triggers; the committer code is the same on SQLite.
        app.stop().await;
        return;
    }
    let other = Database::connect(&app.database_url()).await.unwrap();
    // Every commit that stored a delivery first waits for advisory lock 4242.
    other
        .execute_unprepared(
            "CREATE FUNCTION wait_for_the_test() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             PERFORM pg_advisory_xact_lock_shared(4242); RETURN NULL; END $$",
        )
        .await
        .unwrap();
    other
        .execute_unprepared(
            "CREATE CONSTRAINT TRIGGER commit_waits AFTER INSERT ON deliveries \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION wait_for_the_test()",
        )
        .await
        .unwrap();
    let hold = other.begin().await.unwrap();
    hold.execute_unprepared("SELECT pg_advisory_xact_lock(4242)")
        .await
        .unwrap();

    let answered = Arc::new(AtomicUsize::new(0));
    let sender = tokio::spawn({
        let (request, answered) = (
            app.signed_request(body::connected(&new_id(), &new_id())),
            answered.clone(),
        );
        async move {
            let response = request.send().await.expect("request sent");
            answered.fetch_add(1, Ordering::SeqCst);
            response.status().as_u16()
        }
    });
    // The delivery is stored and applied; its COMMIT now waits for the lock.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let waiting = other
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index::<i64>(0)
            .unwrap();
        if waiting > 0 || answered.load(Ordering::SeqCst) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the commit never began");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        answered.load(Ordering::SeqCst),
        0,
        "no answer while the commit is held back"
    );
    hold.rollback().await.unwrap();
    assert_eq!(sender.await.unwrap(), 200);
    assert_eq!(app.deliveries().await.len(), 1);
    other.close().await.ok();
    app.stop().await;
}

#[tokio::test]
async fn a_batch_waiting_for_a_row_another_transaction_holds_does_not_hold_the_append_lock() {
    let app = spawn_app().await;
    if !app.on_postgres() {
        // The append lock is PostgreSQL's; SQLite has one writer.
        app.stop().await;
        return;
    }
    let (user, account) = (new_id(), new_id());
    app.deliver_ok(&body::connected(&user, &account)).await;

    // Another transaction (as another replica's batch would) holds the account's row.
    let other = Database::connect(&app.database_url()).await.unwrap();
    let hold = other.begin().await.unwrap();
    hold.execute_unprepared(&format!(
        "SELECT 1 FROM accounts WHERE account_id = '{account}' FOR UPDATE"
    ))
    .await
    .unwrap();
    let sending = {
        let request = app.signed_request(body::updated(
            &user,
            &account,
            "connected",
            "2026-11-20T10:00:00Z",
        ));
        tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
    };

    // The batch's write-back now waits for that row...
    let deadline = Instant::now() + PATIENCE;
    while other
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
             AND query LIKE '%INSERT INTO \"accounts\"%'",
        ))
        .await
        .unwrap()
        .is_none()
    {
        assert!(Instant::now() < deadline, "the write-back never waited");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // ... without holding the append lock, which the other transaction may need to commit.
    let probe = other.begin().await.unwrap();
    let free: bool = probe
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            format!(
                "SELECT pg_try_advisory_xact_lock({})",
                readiness::store::log::APPEND_LOCK_KEY
            ),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap();
    probe.rollback().await.unwrap();
    assert!(free, "the append lock was taken before the batch's writes");

    hold.rollback().await.unwrap();
    assert_eq!(sending.await.unwrap(), 200);
    assert_eq!(
        app.account_state(&user, &account).await,
        pb::AccountState::Connected
    );
    app.stop().await;
}
