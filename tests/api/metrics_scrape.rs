//! `/metrics` costs no database work per scrape (the user gauges are kept from the event log),
//! and can be limited to the addresses of the scrapers.

use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database, TransactionTrait};

use crate::helpers::{TestApp, body, new_id};

#[tokio::test]
async fn scrapes_answer_at_once_while_the_users_table_is_locked() {
    let app = TestApp::spawn().await;
    if !app.on_postgres() {
        // SQLite readers cannot be blocked while the service holds the file open (WAL); the
        // PostgreSQL run of the suite checks this.
        eprintln!("skipped on SQLite: needs LOCK TABLE (runs on PostgreSQL)");
        app.stop().await;
        return;
    }
    let (user, account) = (new_id(), new_id());
    app.deliver_ok(&body::connected(&user, &account)).await;
    let other = Database::connect(&app.database_url()).await.unwrap();
    let lock = other.begin().await.unwrap();
    lock.execute_unprepared("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    let started = Instant::now();
    let scrapes: Vec<_> = (0..32)
        .map(|_| {
            let request = app.client.get(app.url("/metrics")).send();
            tokio::spawn(tokio::time::timeout(Duration::from_secs(10), request))
        })
        .collect();
    let mut answers = Vec::new();
    for scrape in scrapes {
        answers.push(scrape.await.unwrap());
    }

    let took = started.elapsed();
    lock.rollback().await.unwrap();
    for answer in answers {
        let response = answer
            .expect("answered while the table was locked")
            .unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        assert!(
            text.contains("readiness_users{state=\"pending\"}"),
            "{text}"
        );
    }
    assert!(took < Duration::from_secs(5), "32 scrapes took {took:?}");
    app.stop().await;
}

#[tokio::test]
async fn metrics_can_be_limited_to_the_scrapers_addresses() {
    let open = TestApp::spawn().await;
    let response = open.client.get(open.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200, "open by default");
    open.stop().await;

    let limited = TestApp::spawn_with(|settings| {
        settings.metrics_allowed_cidrs = vec!["10.0.0.0/8".into()];
    })
    .await;
    let response = limited
        .client
        .get(limited.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["error"], "forbidden_source");
    // Webhooks and probes are not affected.
    assert_eq!(
        limited
            .client
            .get(limited.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    limited
        .deliver_ok(&body::connected(&new_id(), &new_id()))
        .await;
    limited.stop().await;

    let allowed = TestApp::spawn_with(|settings| {
        settings.metrics_allowed_cidrs = vec!["127.0.0.1/32".into()];
    })
    .await;
    let response = allowed
        .client
        .get(allowed.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    allowed.stop().await;
}
