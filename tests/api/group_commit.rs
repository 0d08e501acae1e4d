//! Group commit: deliveries that arrive while a commit is busy share the next transaction, each
//! sender is answered only after that transaction commits, and a delivery that makes the database
//! fail does not fail the others of its batch. The tests make a batch form for certain by holding
//! the deliveries table's write lock from another connection while the deliveries arrive.

use std::collections::BTreeMap;
use std::time::Duration;

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
    TestApp::spawn_with(|settings| {
        settings.ingest_committers = 1;
        settings.database_timeout_secs = 20;
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

/// Holds the deliveries table from another connection, sends one delivery (its commit then waits
/// for the lock), sends `queued` (they queue behind that commit), checks that nothing is stored
/// yet, and releases the lock. Returns every answer: body, status and JSON.
async fn queue_behind_a_busy_commit(app: &TestApp, queued: Vec<String>) -> Vec<Answered> {
    let other = Database::connect(&app.database_url()).await.unwrap();
    let hold = hold_writes(app, &other).await;
    let mut tasks = JoinSet::new();
    let send = |tasks: &mut JoinSet<Answered>, bodies: Vec<String>| {
        for body in bodies {
            let request = app.signed_request(body.clone());
            tasks.spawn(async move {
                let response = request.send().await.expect("request sent");
                let status = response.status().as_u16();
                let answer = response.json().await.unwrap_or(Value::Null);
                (body, status, answer)
            });
        }
    };
    send(&mut tasks, vec![body::connected(&new_id(), &new_id())]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(&mut tasks, queued);
    tokio::time::sleep(Duration::from_millis(500)).await;
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

#[tokio::test]
async fn deliveries_that_queue_behind_a_busy_commit_share_one_transaction() {
    let app = spawn_app().await;
    let queued: Vec<String> = (0..8)
        .map(|_| body::connected(&new_id(), &new_id()))
        .collect();
    for (body, status, _) in queue_behind_a_busy_commit(&app, queued).await {
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(app.deliveries().await.len(), 9);
    // Every delivery of a user's first connection logs two events (account, readiness); a batch's
    // events share the batch's commit time.
    let mut per_commit: BTreeMap<String, usize> = BTreeMap::new();
    for row in event::Entity::find().all(app.core.db()).await.unwrap() {
        *per_commit.entry(row.recorded_at.to_rfc3339()).or_default() += 1;
    }
    let mut sizes: Vec<usize> = per_commit.into_values().collect();
    sizes.sort_unstable();
    assert_eq!(
        sizes,
        vec![2, 16],
        "the first delivery commits alone; the eight that queued behind it commit together"
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
