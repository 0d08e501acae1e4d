//! Access control and ingress protection: gRPC bearer tokens, TLS and mutual TLS, the webhook
//! source allow-list (with a trusted proxy header), load shedding, request timeouts, gRPC message
//! limits, and secrets that never reach logs or answers.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use readiness::grpc::hash_token;
use readiness::grpc::pb;
use readiness::grpc::pb::readiness_service_client::ReadinessServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::{TestApp, body, new_id};

fn lookup() -> pb::GetUserReadinessRequest {
    pb::GetUserReadinessRequest {
        user: Some(pb::get_user_readiness_request::User::UserId(new_id())),
    }
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    request
}

#[tokio::test]
async fn grpc_calls_need_a_configured_bearer_token_while_health_and_reflection_can_stay_open() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(
        &file,
        format!("# ops team\n{}\n", hash_token("from-the-file")),
    )
    .unwrap();
    let app = TestApp::spawn_with(|settings| {
        settings.grpc_token_sha256 = vec![hash_token("service-a-token")];
        settings.grpc_token_file = Some(file.clone());
    })
    .await;
    let mut client = ReadinessServiceClient::new(app.channel().await);

    let missing = client.get_user_readiness(lookup()).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert!(missing.message().contains("missing bearer token"));
    let wrong = client
        .get_user_readiness(with_token(lookup(), "guess"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    for token in ["service-a-token", "from-the-file"] {
        let status = client
            .get_user_readiness(with_token(lookup(), token))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::NotFound,
            "{token} passes authentication"
        );
    }
    let stream = client
        .watch_readiness(pb::WatchReadinessRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        stream.code(),
        Code::Unauthenticated,
        "streams are protected too"
    );

    let mut health = HealthClient::new(app.channel().await);
    assert!(
        health.check(HealthCheckRequest::default()).await.is_ok(),
        "health is open by default"
    );
    app.stop().await;

    let app = TestApp::spawn_with(|settings| {
        settings.grpc_token_sha256 = vec![hash_token("service-a-token")];
        settings.grpc_open_health = false;
    })
    .await;
    let mut health = HealthClient::new(app.channel().await);
    let closed = health
        .check(HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(closed.code(), Code::Unauthenticated);
    assert!(
        health
            .check(with_token(HealthCheckRequest::default(), "service-a-token"))
            .await
            .is_ok()
    );
    app.stop().await;
}

/// A CA, a server certificate for localhost and a client certificate, all signed by the CA.
struct Pki {
    dir: tempfile::TempDir,
    ca: String,
    client_cert: String,
    client_key: String,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["client.internal".to_owned()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.path().join("server.pem"), server.pem()).unwrap();
    std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).unwrap();
    Pki {
        dir,
        ca: ca.pem(),
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}

async fn tls_channel(
    app: &TestApp,
    pki: &Pki,
    with_client_cert: bool,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost");
    if with_client_cert {
        tls = tls.identity(Identity::from_pem(&pki.client_cert, &pki.client_key));
    }
    Endpoint::from_shared(format!("https://{}", app.grpc))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

#[tokio::test]
async fn grpc_serves_tls_and_with_a_client_ca_requires_client_certificates() {
    let pki = pki();
    let path = |name: &str| Some(pki.dir.path().join(name));
    let app = TestApp::spawn_with(|settings| {
        settings.grpc_tls_cert = path("server.pem");
        settings.grpc_tls_key = path("server.key");
    })
    .await;
    let mut client = ReadinessServiceClient::new(tls_channel(&app, &pki, false).await.unwrap());
    assert_eq!(
        client
            .get_user_readiness(lookup())
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let mut plaintext = ReadinessServiceClient::new(app.channel().await);
    assert!(
        plaintext.get_user_readiness(lookup()).await.is_err(),
        "plaintext is refused"
    );
    app.stop().await;

    let app = TestApp::spawn_with(|settings| {
        settings.grpc_tls_cert = path("server.pem");
        settings.grpc_tls_key = path("server.key");
        settings.grpc_tls_client_ca = path("ca.pem");
    })
    .await;
    let mut mutual = ReadinessServiceClient::new(tls_channel(&app, &pki, true).await.unwrap());
    assert_eq!(
        mutual
            .get_user_readiness(lookup())
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let refused = match tls_channel(&app, &pki, false).await {
        Err(_) => true,
        Ok(channel) => ReadinessServiceClient::new(channel)
            .get_user_readiness(lookup())
            .await
            .is_err_and(|s| s.code() != Code::NotFound),
    };
    assert!(refused, "a client without a certificate is refused");
    app.stop().await;
}

#[tokio::test]
async fn webhooks_are_accepted_only_from_allowed_sources_and_a_proxy_header_only_from_trusted_proxies()
 {
    let app =
        TestApp::spawn_with(|settings| settings.http_allowed_cidrs = vec!["10.0.0.0/8".into()])
            .await;
    let (status, answer) = app.deliver(&body::connected(&new_id(), &new_id())).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"], "forbidden_source");
    assert!(app.deliveries().await.is_empty());
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "probes stay open"
    );
    app.stop().await;

    let forwarded = |app: &TestApp, address: &'static str| {
        app.signed_request(body::connected(&new_id(), &new_id()))
            .header("x-forwarded-for", format!("198.51.100.9, {address}"))
            .send()
    };
    let behind_proxy = TestApp::spawn_with(|settings| {
        settings.http_allowed_cidrs = vec!["34.122.50.253".into()];
        settings.http_client_ip_header = Some("x-forwarded-for".into());
        settings.http_trusted_proxies = vec!["127.0.0.0/8".into()];
    })
    .await;
    assert_eq!(
        forwarded(&behind_proxy, "34.122.50.253")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        forwarded(&behind_proxy, "203.0.113.5")
            .await
            .unwrap()
            .status(),
        403
    );
    behind_proxy.stop().await;

    let untrusted = TestApp::spawn_with(|settings| {
        settings.http_allowed_cidrs = vec!["34.122.50.253".into()];
        settings.http_client_ip_header = Some("x-forwarded-for".into());
    })
    .await;
    assert_eq!(
        forwarded(&untrusted, "34.122.50.253")
            .await
            .unwrap()
            .status(),
        403,
        "the header of an untrusted peer is ignored"
    );
    untrusted.stop().await;
}

/// Opens a webhook request whose body never finishes, holding a request slot.
async fn stalled_request(app: &TestApp) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(app.http).await.unwrap();
    let head = "POST /webhooks/argyle HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

#[tokio::test]
async fn beyond_the_in_flight_limit_requests_are_shed_with_503_and_retry_after() {
    let app = TestApp::spawn_with(|settings| settings.http_max_in_flight = 1).await;
    let _holder = stalled_request(&app).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let response = app
        .client
        .post(app.url("/webhooks/argyle"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["error"], "overloaded");
}

#[tokio::test]
async fn a_request_that_takes_too_long_is_answered_408_and_acknowledges_nothing() {
    let app = TestApp::spawn_with(|settings| settings.http_request_timeout_secs = 1).await;
    let mut stream = stalled_request(&app).await;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(app.deliveries().await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn an_oversized_grpc_request_is_refused() {
    let app = TestApp::spawn_with(|settings| settings.grpc_max_message_bytes = 1024).await;
    let mut client = app.readiness_client().await;
    let request = pb::GetUserReadinessRequest {
        user: Some(pb::get_user_readiness_request::User::ExternalId(
            "x".repeat(4096),
        )),
    };
    let status = client.get_user_readiness(request).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("the limit is: 1024 bytes"));
    app.stop().await;
}

#[test]
fn secrets_never_appear_in_logs_or_answers() {
    let dir = tempfile::tempdir().unwrap();
    let webhook_secret = "webhook-secret-do-not-print";
    let database_password = "db-password-do-not-print";
    // Start with a bad database password in the URL: start-up fails and reports it, redacted.
    let failed = Command::new(env!("CARGO_BIN_EXE_readiness"))
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--database-timeout-secs",
            "1",
        ])
        .env("READINESS_ARGYLE_SECRETS", webhook_secret)
        .env(
            "READINESS_DATABASE_URL",
            format!("postgres://app:{database_password}@127.0.0.1:1/db"),
        )
        .output()
        .unwrap();
    assert!(!failed.status.success());
    let text = String::from_utf8_lossy(&failed.stderr);
    assert!(
        text.contains("opening database postgres://app:***@127.0.0.1:1/db"),
        "{text}"
    );
    assert!(
        !text.contains(database_password) && !text.contains(webhook_secret),
        "{text}"
    );

    // A running server with JSON logs at debug level, fed good and bad deliveries.
    let mut child = Command::new(env!("CARGO_BIN_EXE_readiness"))
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .env("READINESS_ARGYLE_SECRETS", webhook_secret)
        .env(
            "READINESS_DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display()),
        )
        .env("RUST_LOG", "debug")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut logs = String::new();
    let http = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "server exited: {logs}"
        );
        logs.push_str(&line);
        if line.contains("\"serving\"") {
            let value: serde_json::Value = serde_json::from_str(&line).unwrap();
            break value["fields"]["http"].as_str().unwrap().to_owned();
        }
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let answers = runtime.block_on(async {
        let client = reqwest::Client::new();
        let mut answers = String::new();
        let delivery = body::connected(&new_id(), &new_id());
        for signature in [
            readiness::domain::signature::sign(
                &readiness::domain::signature::Secret::new(webhook_secret),
                delivery.as_bytes(),
            ),
            "00".repeat(64),
        ] {
            let response = client
                .post(format!("http://{http}/webhooks/argyle"))
                .header("content-type", "application/json")
                .header("x-argyle-signature", signature)
                .body(delivery.clone())
                .send()
                .await
                .unwrap();
            answers.push_str(&response.text().await.unwrap());
        }
        answers
    });
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    std::io::Read::read_to_string(&mut stderr, &mut logs).unwrap();
    child.wait().unwrap();
    assert!(logs.contains("\"serving\""));
    for text in [&logs, &answers] {
        assert!(!text.contains(webhook_secret), "secret leaked: {text}");
    }
    assert!(
        !logs.contains("accounts.connected\",\"name\""),
        "webhook bodies are not logged"
    );
}
