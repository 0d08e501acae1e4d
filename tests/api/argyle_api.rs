//! `readiness argyle ...` against the local fake of Argyle's API (the real one is out of reach):
//! [`readiness::argyle::fake`] checks HTTP Basic credentials and request bodies, pages its
//! `/v2/webhooks` listing with `next` links, and can be told to fail with 429 or 503.

use std::process::Command;

use readiness::argyle::Endpoint;
use readiness::argyle::fake::{FakeArgyle, FakeConfig, Fault};
use serde_json::{Value, json};

const KEY_ID: &str = "key-id";
const KEY_SECRET: &str = "key-secret";

async fn start_fake() -> (FakeArgyle, String) {
    let config = FakeConfig {
        key_id: KEY_ID.into(),
        key_secret: KEY_SECRET.into(),
        ..FakeConfig::default()
    };
    let fake = FakeArgyle::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let base = fake.base_url().to_owned();
    (fake, base)
}

async fn argyle(base: &str, secret: &str, args: &[&str]) -> (bool, String, String) {
    argyle_signing_with(base, secret, "signing-secret,older-secret", args).await
}

/// `readiness argyle ARGS` with `READINESS_ARGYLE_SECRETS=signing` (the first one signs).
async fn argyle_signing_with(
    base: &str,
    secret: &str,
    signing: &str,
    args: &[&str],
) -> (bool, String, String) {
    let (base, secret, signing, args) = (
        base.to_owned(),
        secret.to_owned(),
        signing.to_owned(),
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    );
    tokio::task::spawn_blocking(move || {
        let output = Command::new(env!("CARGO_BIN_EXE_readiness"))
            .args(["argyle", "--base-url", &base])
            .args(&args)
            .env("READINESS_ARGYLE_API_KEY_ID", KEY_ID)
            .env("READINESS_ARGYLE_API_KEY_SECRET", secret)
            .env("READINESS_ARGYLE_SECRETS", signing)
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
    fake.add_subscription(json!({"id": "other", "name": "billing", "events": ["paystubs.added"], "config": {}, "url": "https://elsewhere"}));
    let url = "https://readiness.example.com/webhooks/argyle";

    let (ok, dry, err) = argyle(&base, KEY_SECRET, &["subscribe", "--url", url, "--dry-run"]).await;
    assert!(ok, "{err}");
    assert!(
        dry.contains("POST") && dry.contains("<redacted>") && !dry.contains("signing-secret"),
        "{dry}"
    );
    assert_eq!(fake.subscriptions().len(), 1, "a dry run changes nothing");

    let (ok, out, err) = argyle(&base, KEY_SECRET, &["subscribe", "--url", url]).await;
    assert!(ok, "{err}");
    assert_eq!(out.matches("\"created\"").count(), 2, "{out}");
    let subscriptions = fake.subscriptions();
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
    let posts = |fake: &FakeArgyle| {
        fake.requests()
            .iter()
            .filter(|r| r.method == "POST")
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
    assert_eq!(fake.subscriptions().len(), 3);

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
    assert_eq!(fake.subscriptions().len(), 2);
}

#[tokio::test]
async fn subscribe_replaces_subscriptions_with_another_secret_or_events_which_completes_a_rotation()
{
    let (fake, base) = start_fake().await;
    let url = "https://readiness.example.com/webhooks/argyle";
    let subscribe = |signing: &'static str| {
        let base = base.clone();
        async move {
            let (ok, out, err) =
                argyle_signing_with(&base, KEY_SECRET, signing, &["subscribe", "--url", url]).await;
            assert!(ok, "{err}");
            out
        }
    };
    let changes = |out: &str| {
        (
            out.matches("\"deleted\"").count(),
            out.matches("\"created\"").count(),
            out.matches("\"unchanged\"").count(),
        )
    };
    let secrets = |fake: &FakeArgyle| {
        let mut secrets: Vec<Value> = fake
            .subscriptions()
            .iter()
            .map(|s| s["secret"].clone())
            .collect();
        secrets.sort_by_key(|s| s.to_string());
        secrets
    };

    assert_eq!(changes(&subscribe("old-secret").await), (0, 2, 0));

    // The README's rotation, step 2: the new secret first, the old one still accepted.
    let out = subscribe("new-secret,old-secret").await;
    assert_eq!(changes(&out), (2, 2, 0), "{out}");
    assert_eq!(secrets(&fake), [json!("new-secret"), json!("new-secret")]);
    let out = subscribe("new-secret,old-secret").await;
    assert_eq!(changes(&out), (0, 0, 2), "done once: {out}");

    // A subscription of ours whose events were changed by hand is put back.
    let reports = fake
        .subscriptions()
        .into_iter()
        .find(|s| s["name"] == "readiness-reports")
        .unwrap();
    let (ok, _, err) = argyle(
        &base,
        KEY_SECRET,
        &["webhooks", "delete", reports["id"].as_str().unwrap()],
    )
    .await;
    assert!(ok, "{err}");
    fake.add_subscription(json!({"id": "edited", "name": "readiness-reports",
        "events": ["reports.ready"], "config": {}, "url": url, "secret": "new-secret"}));
    let out = subscribe("new-secret").await;
    assert_eq!(changes(&out), (1, 1, 1), "{out}");
    let reports = fake
        .subscriptions()
        .into_iter()
        .find(|s| s["name"] == "readiness-reports")
        .unwrap();
    assert_eq!(
        reports["events"],
        json!(["reports.ready", "reports.generated", "users.fully_synced"])
    );
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

    fake.script(Endpoint::ListWebhooks, [Fault::rate_limited("7")]);
    let (ok, _, err) = argyle(&base, KEY_SECRET, &["webhooks", "list"]).await;
    assert!(!ok);
    assert!(
        err.contains("rate limiting") && err.contains("retry after 7 s"),
        "{err}"
    );

    fake.script(Endpoint::ListWebhooks, [Fault::status(503)]);
    let (ok, _, err) = argyle(&base, KEY_SECRET, &["subscribe", "--url", "https://x"]).await;
    assert!(!ok);
    assert!(
        err.contains("Argyle failed with 503") && err.contains("later"),
        "{err}"
    );

    let (ok, _, err) = argyle(&base, KEY_SECRET, &["webhooks", "delete", "missing"]).await;
    assert!(!ok);
    assert!(err.contains("rejected the request with 404"), "{err}");

    let (ok, _, err) = argyle("http://127.0.0.1:9/v2", KEY_SECRET, &["webhooks", "list"]).await;
    assert!(!ok);
    assert!(err.contains("could not reach Argyle"), "{err}");
}
