//! `readiness argyle ...` against a local fake of Argyle's `/v2/webhooks` API (the real one is out
//! of reach): an axum app that checks HTTP Basic credentials and request bodies, pages its
//! listing with `next` links, and can be told to fail with 429 or 503.

use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{Value, json};

const KEY_ID: &str = "key-id";
const KEY_SECRET: &str = "key-secret";

#[derive(Clone, Default)]
struct Fake {
    subscriptions: Arc<Mutex<Vec<Value>>>,
    /// Every request as "METHOD path".
    requests: Arc<Mutex<Vec<String>>>,
    /// Answer everything with this status (429, 503) when set.
    failing: Arc<Mutex<Option<u16>>>,
    base: Arc<Mutex<String>>,
}

/// The refusal to send instead of serving the request, if any.
fn guard(fake: &Fake, headers: &HeaderMap, line: String) -> Option<Response> {
    fake.requests.lock().unwrap().push(line);
    if let Some(status) = *fake.failing.lock().unwrap() {
        let mut response = (
            StatusCode::from_u16(status).unwrap(),
            "{\"detail\":\"try later\"}",
        )
            .into_response();
        if status == 429 {
            response
                .headers_mut()
                .insert("retry-after", "7".parse().unwrap());
        }
        return Some(response);
    }
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{KEY_ID}:{KEY_SECRET}"))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return Some(
            (
                StatusCode::UNAUTHORIZED,
                "{\"detail\":\"Invalid credentials.\"}",
            )
                .into_response(),
        );
    }
    None
}

async fn list(
    State(fake): State<Fake>,
    headers: HeaderMap,
    query: axum::extract::RawQuery,
) -> Response {
    if let Some(response) = guard(&fake, &headers, "GET /v2/webhooks".into()) {
        return response;
    }
    let all = fake.subscriptions.lock().unwrap().clone();
    let offset: usize = query
        .0
        .and_then(|q| q.strip_prefix("offset=").and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    let page: Vec<_> = all.iter().skip(offset).take(2).cloned().collect();
    let next = (offset + 2 < all.len()).then(|| {
        format!(
            "{}/webhooks?offset={}",
            fake.base.lock().unwrap(),
            offset + 2
        )
    });
    Json(json!({"next": next, "previous": null, "results": page})).into_response()
}

async fn create(State(fake): State<Fake>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Some(response) = guard(&fake, &headers, "POST /v2/webhooks".into()) {
        return response;
    }
    for field in ["name", "url"] {
        if !body[field].is_string() {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({field: ["This field is required."]})),
            )
                .into_response();
        }
    }
    if body["events"]
        .as_array()
        .is_none_or(|events| events.is_empty())
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"events": ["This field is required."]})),
        )
            .into_response();
    }
    let created = json!({
        "id": uuid::Uuid::new_v4().to_string(), "name": body["name"], "events": body["events"],
        "config": body.get("config").cloned().unwrap_or(json!({})), "secret": body["secret"], "url": body["url"],
        "created_at": "2026-11-27T00:00:00Z", "updated_at": "2026-11-27T00:00:00Z", "last_sent_at": null,
    });
    fake.subscriptions.lock().unwrap().push(created.clone());
    (StatusCode::CREATED, Json(created)).into_response()
}

async fn remove(State(fake): State<Fake>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(response) = guard(&fake, &headers, format!("DELETE /v2/webhooks/{id}")) {
        return response;
    }
    let mut all = fake.subscriptions.lock().unwrap();
    let before = all.len();
    all.retain(|s| s["id"] != id);
    if all.len() == before {
        StatusCode::NOT_FOUND.into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

async fn start_fake() -> (Fake, String) {
    let fake = Fake::default();
    let app = Router::new()
        .route("/v2/webhooks", get(list).post(create))
        .route("/v2/webhooks/{id}", delete(remove))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v2", listener.local_addr().unwrap());
    *fake.base.lock().unwrap() = base.clone();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (fake, base)
}

async fn argyle(base: &str, secret: &str, args: &[&str]) -> (bool, String, String) {
    let (base, secret, args) = (
        base.to_owned(),
        secret.to_owned(),
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    );
    tokio::task::spawn_blocking(move || {
        let output = Command::new(env!("CARGO_BIN_EXE_readiness"))
            .args(["argyle", "--base-url", &base])
            .args(&args)
            .env("READINESS_ARGYLE_API_KEY_ID", KEY_ID)
            .env("READINESS_ARGYLE_API_KEY_SECRET", secret)
            .env("READINESS_ARGYLE_SECRETS", "signing-secret,older-secret")
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn subscribe_creates_the_needed_subscriptions_once_and_list_and_delete_manage_them() {
    let (fake, base) = start_fake().await;
    // Someone else's subscription is left alone.
    fake.subscriptions.lock().unwrap().push(json!({"id": "other", "name": "billing", "events": ["paystubs.added"], "config": {}, "url": "https://elsewhere"}));
    let url = "https://readiness.example.com/webhooks/argyle";

    let (ok, dry, err) = argyle(&base, KEY_SECRET, &["subscribe", "--url", url, "--dry-run"]).await;
    assert!(ok, "{err}");
    assert!(
        dry.contains("POST") && dry.contains("<redacted>") && !dry.contains("signing-secret"),
        "{dry}"
    );
    assert_eq!(
        fake.subscriptions.lock().unwrap().len(),
        1,
        "a dry run changes nothing"
    );

    let (ok, out, err) = argyle(&base, KEY_SECRET, &["subscribe", "--url", url]).await;
    assert!(ok, "{err}");
    assert_eq!(out.matches("\"created\"").count(), 2, "{out}");
    let subscriptions = fake.subscriptions.lock().unwrap().clone();
    let accounts = subscriptions
        .iter()
        .find(|s| s["name"] == "readiness-accounts")
        .unwrap();
    assert_eq!(
        accounts["events"],
        json!([
            "accounts.added",
            "accounts.connected",
            "accounts.failed",
            "accounts.updated",
            "accounts.removed"
        ])
    );
    assert_eq!(accounts["config"]["include_resource"], true);
    assert_eq!(accounts["secret"], "signing-secret");
    assert_eq!(accounts["url"], url);
    let reports = subscriptions
        .iter()
        .find(|s| s["name"] == "readiness-reports")
        .unwrap();
    assert_eq!(
        reports["events"],
        json!(["reports.ready", "reports.generated", "users.fully_synced"])
    );

    // Idempotent: a second run lists (across pages) and changes nothing.
    let posts = |fake: &Fake| {
        fake.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.starts_with("POST"))
            .count()
    };
    let before = posts(&fake);
    let (ok, out, _) = argyle(&base, KEY_SECRET, &["subscribe", "--url", url]).await;
    assert!(ok);
    assert_eq!(out.matches("\"unchanged\"").count(), 2, "{out}");
    assert_eq!(posts(&fake), before);

    // A new URL replaces ours (Argyle has no update call).
    let (ok, out, _) = argyle(
        &base,
        KEY_SECRET,
        &[
            "subscribe",
            "--url",
            "https://new.example.com/webhooks/argyle",
        ],
    )
    .await;
    assert!(ok);
    assert_eq!(
        (
            out.matches("\"deleted\"").count(),
            out.matches("\"created\"").count()
        ),
        (2, 2),
        "{out}"
    );
    assert_eq!(fake.subscriptions.lock().unwrap().len(), 3);

    let (ok, listed, _) = argyle(&base, KEY_SECRET, &["webhooks", "list"]).await;
    assert!(ok);
    let listed: Vec<Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 3);
    assert!(
        listed.iter().all(|s| s.get("secret").is_none()),
        "secrets are not printed"
    );

    let (ok, _, err) = argyle(&base, KEY_SECRET, &["webhooks", "delete", "other"]).await;
    assert!(ok, "{err}");
    assert_eq!(fake.subscriptions.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn argyle_errors_become_clear_messages() {
    let (fake, base) = start_fake().await;
    let (ok, _, err) = argyle(&base, "wrong", &["webhooks", "list"]).await;
    assert!(!ok);
    assert!(
        err.contains("refused the credentials (401)")
            && err.contains("READINESS_ARGYLE_API_KEY_SECRET"),
        "{err}"
    );
    assert!(!err.contains("wrong"), "the secret is not echoed");

    *fake.failing.lock().unwrap() = Some(429);
    let (ok, _, err) = argyle(&base, KEY_SECRET, &["webhooks", "list"]).await;
    assert!(!ok);
    assert!(
        err.contains("rate limiting") && err.contains("retry after 7 s"),
        "{err}"
    );

    *fake.failing.lock().unwrap() = Some(503);
    let (ok, _, err) = argyle(&base, KEY_SECRET, &["subscribe", "--url", "https://x"]).await;
    assert!(!ok);
    assert!(
        err.contains("Argyle failed with 503") && err.contains("later"),
        "{err}"
    );

    *fake.failing.lock().unwrap() = None;
    let (ok, _, err) = argyle(&base, KEY_SECRET, &["webhooks", "delete", "missing"]).await;
    assert!(!ok);
    assert!(err.contains("rejected the request with 404"), "{err}");

    let (ok, _, err) = argyle("http://127.0.0.1:9/v2", KEY_SECRET, &["webhooks", "list"]).await;
    assert!(!ok);
    assert!(err.contains("could not reach Argyle"), "{err}");
}
