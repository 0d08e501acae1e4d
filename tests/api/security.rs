//! Access control and ingress protection: gRPC bearer tokens, TLS and mutual TLS, the webhook
//! source allow-list (with a trusted proxy header), load shedding, request timeouts, gRPC message
//! limits, and secrets that never reach logs or answers.

use std::time::Duration;

use readiness::grpc::hash_token;
use readiness::grpc::pb;
use readiness::grpc::pb::readiness_service_client::ReadinessServiceClient;
use readiness::grpc::pb::report_service_client::ReportServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::process::{ServeProcess, serve_command};
use crate::helpers::{TestApp, TestDatabase, body, new_id, status_code};

fn lookup() -> pb::GetUserReadinessRequest {
    pb::GetUserReadinessRequest {
        user: Some(pb::get_user_readiness_request::User::UserId(new_id())),
        ..Default::default()
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

/// The services server reflection lists, over reflection `v1` and `v1alpha` (grpcurl before
/// 1.8.8 speaks only the latter), with `token` if given.
macro_rules! list_services {
    ($version:ident, $channel:expr, $token:expr) => {{
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
        let ask = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let request = tokio_stream::iter(vec![ask]);
        let token: Option<&str> = $token;
        let request = match token {
            Some(token) => with_token(request, token),
            None => tonic::Request::new(request),
        };
        match ServerReflectionClient::new($channel)
            .server_reflection_info(request)
            .await
        {
            Err(status) => Err(status),
            Ok(answers) => {
                let answer = answers.into_inner().message().await?.expect("an answer");
                match answer.message_response {
                    Some(MessageResponse::ListServicesResponse(list)) => {
                        Ok::<Vec<String>, tonic::Status>(
                            list.service
                                .into_iter()
                                .map(|service| service.name)
                                .collect(),
                        )
                    }
                    other => panic!("expected the service list, got {other:?}"),
                }
            }
        }
    }};
}

/// Lists services over both reflection versions; both must agree.
async fn reflected_services(channel: Channel, token: Option<&str>) -> Result<Vec<String>, Code> {
    let v1 = async { list_services!(v1, channel.clone(), token) }.await;
    let v1alpha = async { list_services!(v1alpha, channel.clone(), token) }.await;
    match (v1, v1alpha) {
        (Ok(mut v1), Ok(mut v1alpha)) => {
            v1.sort();
            v1alpha.sort();
            assert_eq!(v1, v1alpha);
            Ok(v1)
        }
        (Err(v1), Err(v1alpha)) => {
            assert_eq!(v1.code(), v1alpha.code());
            Err(v1.code())
        }
        (v1, v1alpha) => panic!("the versions disagree: {v1:?} vs {v1alpha:?}"),
    }
}

#[tokio::test]
async fn the_http_port_speaks_http_1_1_only_and_refuses_cleartext_http_2() {
    let app = TestApp::spawn().await;
    let http1 = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(
        (http1.status().as_u16(), http1.version()),
        (200, reqwest::Version::HTTP_11)
    );

    let http2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let refused = http2.get(app.url("/healthz")).send().await;
    assert!(
        refused.is_err(),
        "cleartext HTTP/2 was answered: {refused:?}"
    );
    app.stop().await;
}

/// The status code of each `ReportService` call with `token`: the two methods that may need a
/// token of their own (`RequestReport`, `GetReportDocument`, whose first message is awaited)
/// and one that takes the general tokens (`GetReport`), each about a report that does not exist.
async fn report_calls_with(client: &mut ReportServiceClient<Channel>, token: &str) -> [Code; 3] {
    let request = pb::RequestReportRequest {
        user: Some(pb::request_report_request::User::UserId(new_id())),
        r#type: pb::ReportType::Voie.into(),
        ..Default::default()
    };
    let document = pb::GetReportDocumentRequest {
        report: Some(pb::get_report_document_request::Report::Id(new_id())),
        format: pb::DocumentFormat::Pdf.into(),
    };
    let report = pb::GetReportRequest {
        report: Some(pb::get_report_request::Report::Id(new_id())),
        ..Default::default()
    };
    let document = match client
        .get_report_document(with_token(document, token))
        .await
    {
        Ok(stream) => status_code(stream.into_inner().message().await),
        Err(status) => status.code(),
    };
    [
        status_code(client.request_report(with_token(request, token)).await),
        document,
        status_code(client.get_report(with_token(report, token)).await),
    ]
}

#[tokio::test]
async fn request_report_and_get_report_document_take_only_their_own_tokens_once_some_are_set() {
    let app = TestApp::spawn_with(|settings| {
        settings.grpc_token_sha256 = vec![hash_token("general-token")];
        settings.grpc_report_request_token_sha256 = vec![hash_token("report-token")];
    })
    .await;
    let mut client = ReportServiceClient::new(app.channel().await);

    let [request, document, report] = report_calls_with(&mut client, "general-token").await;
    assert_eq!(
        (request, document),
        (Code::Unauthenticated, Code::Unauthenticated),
        "the general token does not reach the report methods"
    );
    assert_eq!(report, Code::NotFound, "the general token reads reports");

    // Past authentication both find the report pipeline off (no Argyle API key here).
    let [request, document, report] = report_calls_with(&mut client, "report-token").await;
    assert_eq!(
        (request, document),
        (Code::FailedPrecondition, Code::FailedPrecondition),
        "the report token reaches the report methods"
    );
    assert_eq!(
        report,
        Code::Unauthenticated,
        "the report token is for those two methods only"
    );
    app.stop().await;
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
    let listed = reflected_services(app.channel().await, None)
        .await
        .expect("reflection is open by default");
    assert!(
        listed.contains(&"readiness.v1.ReadinessService".to_owned()),
        "{listed:?}"
    );
    app.stop().await;

    let app = TestApp::spawn_with(|settings| {
        settings.grpc_token_sha256 = vec![hash_token("service-a-token")];
        settings.grpc_open_health = false;
        settings.grpc_open_reflection = false;
    })
    .await;
    assert_eq!(
        reflected_services(app.channel().await, None).await,
        Err(Code::Unauthenticated),
        "closed reflection needs a token"
    );
    assert_eq!(
        reflected_services(app.channel().await, Some("guess")).await,
        Err(Code::Unauthenticated)
    );
    let listed = reflected_services(app.channel().await, Some("service-a-token"))
        .await
        .expect("reflection with a token");
    assert!(
        listed.contains(&"readiness.v1.ReportService".to_owned()),
        "{listed:?}"
    );
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
async fn with_tls_a_grpc_client_that_never_starts_the_handshake_is_closed_at_the_handshake_timeout()
{
    let pki = pki();
    let path = |name: &str| Some(pki.dir.path().join(name));
    let app = TestApp::spawn_with(|settings| {
        settings.grpc_tls_cert = path("server.pem");
        settings.grpc_tls_key = path("server.key");
        settings.grpc_handshake_timeout_secs = 2;
    })
    .await;
    let mut silent = tokio::net::TcpStream::connect(app.grpc).await.unwrap();
    let connected = std::time::Instant::now();
    let mut buffer = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match silent.read(&mut buffer).await {
                Ok(0) | Err(_) => return connected.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the silent connection is closed");
    assert!(
        closed >= Duration::from_millis(1500) && closed < Duration::from_secs(10),
        "closed after {closed:?}, the handshake timeout is 2 s"
    );
    // A client that does the handshake is served as before.
    let mut client = ReadinessServiceClient::new(tls_channel(&app, &pki, false).await.unwrap());
    let status = client.get_user_readiness(lookup()).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    app.stop().await;
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
async fn beyond_the_in_flight_limit_webhooks_are_shed_with_503_while_probes_still_answer() {
    let app = TestApp::spawn_with(|settings| {
        settings.http_max_in_flight = 1;
        settings.http_max_in_flight_per_source = Some(0); // off: one address sends everything
    })
    .await;
    let holder = stalled_request(&app).await;
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

    // Each route has its own slots: a webhook flood never sheds a probe or a scrape.
    for path in ["/healthz", "/readyz"] {
        let probe = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(probe.status(), 200, "{path} while webhooks are shed");
    }
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let shed = metrics
        .text()
        .await
        .unwrap()
        .lines()
        .find(|line| {
            line.starts_with("readiness_http_requests_shed_total{reason=\"in_flight_limit\"}")
        })
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap());
    assert!(shed >= Some(1.0), "the shed webhook is counted: {shed:?}");
    drop(holder);
    app.stop().await;
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
        ..Default::default()
    };
    let status = client.get_user_readiness(request).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("the limit is: 1024 bytes"));
    app.stop().await;
}

/// A value that cannot appear by chance: a prefix and a fresh UUID, letters and digits only, so
/// it reads the same whether a log line escapes it or not.
fn marker(what: &str) -> String {
    format!("{what}{}", uuid::Uuid::new_v4().simple())
}

/// `url` with `password` in it; a URL that already carries a password keeps its own.
fn with_password(url: &str, password: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    match authority.split_once('@') {
        Some((user, _)) if user.contains(':') => {
            let existing = user.split_once(':').unwrap().1.to_owned();
            (url.to_owned(), existing)
        }
        Some((user, host)) => (
            format!("{scheme}://{user}:{password}@{host}/{path}"),
            password.to_owned(),
        ),
        None => (
            format!("{scheme}://postgres:{password}@{authority}/{path}"),
            password.to_owned(),
        ),
    }
}

#[test]
fn secrets_tokens_passwords_and_webhook_bodies_never_appear_in_logs() {
    const PATIENCE: Duration = Duration::from_secs(30);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let webhook_secret = marker("webhooksecret");
    let token = marker("bearertoken");
    let wrong_token = marker("wrongtoken");
    let in_body = marker("bodymarker");

    // Start with a bad database password in the URL: start-up retries for a second (logging
    // each failure), fails and reports it, redacted.
    let refused_password = marker("dbpassword");
    let failed = crate::helpers::process::run(
        serve_command(0, 0)
            .args(["--database-timeout-secs", "1"])
            .args(["--database-startup-wait-secs", "1"])
            .env("READINESS_ARGYLE_SECRETS", &webhook_secret)
            .env(
                "READINESS_DATABASE_URL",
                format!("postgres://app:{refused_password}@127.0.0.1:1/db"),
            )
            .env("RUST_LOG", "debug"),
        PATIENCE,
    );
    assert!(!failed.status.success());
    let text = String::from_utf8_lossy(&failed.stderr);
    assert!(
        text.contains("opening database postgres://app:***@127.0.0.1:1/db"),
        "{text}"
    );
    assert!(
        text.contains("the database cannot be reached yet"),
        "the retries are logged too: {text}"
    );
    for secret in [&refused_password, &webhook_secret] {
        assert!(!text.contains(secret.as_str()), "{secret} leaked: {text}");
    }

    // A running server with JSON logs at debug level, bearer tokens required, fed good and bad
    // deliveries that all carry a marker. On PostgreSQL its database URL holds a password (trust
    // authentication ignores it); on SQLite there is none to leak.
    let (_database, url) = runtime.block_on(TestDatabase::create());
    let (url, database_password) = if url.starts_with("postgres") {
        let (url, password) = with_password(&url, &marker("dbpassword"));
        (url, Some(password))
    } else {
        (url, None)
    };
    let mut server = ServeProcess::start(
        serve_command(0, 0)
            .env("READINESS_ARGYLE_SECRETS", &webhook_secret)
            .env("READINESS_DATABASE_URL", &url)
            .env("READINESS_GRPC_TOKEN_SHA256", hash_token(&token))
            .env("RUST_LOG", "debug"),
    );
    let (http, grpc) = (server.http, server.grpc);
    let answers = runtime.block_on(async {
        let client = reqwest::Client::new();
        let mut answers = Vec::new();
        let (user, account) = (new_id(), new_id());
        let applied = serde_json::json!({"event": "accounts.connected", "name": in_body,
            "data": {"user": user, "account": account, "note": in_body}})
        .to_string();
        // A value the parser refuses: its error names the field, not the value.
        let refused = serde_json::json!({"event": "accounts.connected", "name": "n",
            "data": {"user": in_body, "account": account}})
        .to_string();
        let sign_with = |body: &str| {
            readiness::domain::signature::sign(
                &readiness::domain::signature::Secret::new(&webhook_secret),
                body.as_bytes(),
            )
        };
        for (body, signature, expected) in [
            (&applied, sign_with(&applied), 200),
            (&applied, "00".repeat(64), 401),
            (&refused, sign_with(&refused), 400),
        ] {
            let response = client
                .post(format!("http://{http}/webhooks/argyle"))
                .header("content-type", "application/json")
                .header("x-argyle-signature", signature)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), expected, "{body}");
            answers.push(response.text().await.unwrap());
        }

        let channel = Endpoint::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = ReadinessServiceClient::new(channel);
        let lookup = |user: &str| pb::GetUserReadinessRequest {
            user: Some(pb::get_user_readiness_request::User::UserId(user.into())),
            ..Default::default()
        };
        let found = client
            .get_user_readiness(with_token(lookup(&user), &token))
            .await
            .unwrap();
        assert_eq!(found.into_inner().user.unwrap().user_id, user);
        let refused = client
            .get_user_readiness(with_token(lookup(&user), &wrong_token))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
        answers.push(refused.message().to_owned());
        answers.join("\n")
    });
    server.terminate();
    assert!(server.wait_for_exit(PATIENCE).success());
    let logs = server.logs();

    assert!(logs.contains("\"serving\""));
    assert!(
        logs.contains("\"url.path\":\"/webhooks/argyle\"") && logs.contains("h2::codec"),
        "the webhooks and the gRPC frames were logged at debug level: {logs}"
    );
    let mut secrets = vec![&webhook_secret, &token, &wrong_token, &in_body];
    secrets.extend(&database_password);
    for secret in secrets {
        assert!(!logs.contains(secret.as_str()), "{secret} leaked: {logs}");
    }
    for secret in [&webhook_secret, &token, &wrong_token] {
        assert!(
            !answers.contains(secret.as_str()),
            "{secret} leaked: {answers}"
        );
    }
}
