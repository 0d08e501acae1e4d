//! Silent, slow and numerous clients against the real binary, run as its own process so its
//! descriptor limit is real (`ulimit -n`): connections that send nothing or trickle headers are
//! closed in time on both ports, idle keep-alive connections and dead HTTP/2 peers are dropped, a
//! source trickling bodies is cut at the body deadline and held to its per-source cap, and
//! start-up warns about listeners exposed without their protection. Settings go through the
//! environment, the way an operator sets them.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use readiness::domain::signature::{Secret, sign};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::{SECRET, TestDatabase, body, new_id};

const BIN: &str = env!("CARGO_BIN_EXE_readiness");

/// `readiness serve` in a child process, with its JSON log lines collected.
struct Service {
    child: Child,
    http: SocketAddr,
    grpc: SocketAddr,
    logs: Arc<Mutex<String>>,
    _database: TestDatabase,
}

impl Service {
    /// Starts the service with these `READINESS_*` variables, under `ulimit -n` when given, and
    /// waits until it serves.
    async fn start(descriptor_limit: Option<u32>, settings: &[(&str, &str)]) -> Self {
        let (database, url) = TestDatabase::create().await;
        let mut command = match descriptor_limit {
            // The crate forbids unsafe code, so the limit is set by a shell that then execs.
            Some(limit) => {
                let mut command = Command::new("sh");
                command.args([
                    "-c",
                    &format!("ulimit -n {limit} && exec \"$0\" serve"),
                    BIN,
                ]);
                command
            }
            None => {
                let mut command = Command::new(BIN);
                command.arg("serve");
                command
            }
        };
        command
            .env("READINESS_ARGYLE_SECRETS", SECRET)
            .env("READINESS_DATABASE_URL", url)
            .env("READINESS_HTTP_ADDR", "127.0.0.1:0")
            .env("READINESS_GRPC_ADDR", "127.0.0.1:0")
            .env("READINESS_LOG_FORMAT", "json")
            // Stalled test clients must not hold the drain at the end of a test.
            .env("READINESS_SHUTDOWN_GRACE_SECS", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in settings {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("readiness starts");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        let (serving, started) = std::sync::mpsc::channel();
        let collected = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                collected.lock().unwrap().push_str(&format!("{line}\n"));
                if line.contains("\"serving\"") {
                    let _ = serving.send(line);
                }
            }
        });
        let line = started
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("not serving: {}", logs.lock().unwrap()));
        let line: serde_json::Value = serde_json::from_str(&line).unwrap();
        let address = |name: &str| line["fields"][name].as_str().unwrap().parse().unwrap();
        Self {
            child,
            http: address("http"),
            grpc: address("grpc"),
            logs,
            _database: database,
        }
    }

    fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// CPU time the process has used so far (user and system, from `/proc`).
    fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the command name, which is in parentheses: utime and stime are 14 and 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        let per_second: u64 = String::from_utf8(
            Command::new("getconf")
                .arg("CLK_TCK")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap();
        Duration::from_millis(ticks * 1000 / per_second)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads and discards whatever the server sends until it closes the connection (EOF or reset);
/// returns how long after `since` that was, or `None` if it was still open after `patience`.
async fn time_until_closed(
    mut stream: TcpStream,
    since: Instant,
    patience: Duration,
) -> Option<Duration> {
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(patience, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return since.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// A signed webhook request for a fresh user.
fn signed_webhook(client: &reqwest::Client, url: String) -> reqwest::RequestBuilder {
    let delivery = body::connected(&new_id(), &new_id());
    client
        .post(url)
        .header("content-type", "application/json")
        .header(
            "x-argyle-signature",
            sign(&Secret::new(SECRET), delivery.as_bytes()),
        )
        .body(delivery)
}

/// A webhook request (with one more header line, if any) whose headers promise 100 bytes and
/// whose body stops after one.
fn trickle(extra_header: &str) -> String {
    let extra = if extra_header.is_empty() {
        String::new()
    } else {
        format!("{extra_header}\r\n")
    };
    format!(
        "POST /webhooks/argyle HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n{extra}\r\n{{"
    )
}

/// An HTTP answer read off a raw connection: status, headers (lower-cased names) and body.
struct Answer {
    status: u16,
    head: String,
    body: String,
    after: Duration,
}

/// Reads one HTTP/1.1 response (head and `Content-Length` body) within `patience`.
async fn read_answer(stream: &mut TcpStream, patience: Duration) -> Option<Answer> {
    let started = Instant::now();
    tokio::time::timeout(patience, async {
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&received).into_owned();
            if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                let head = head.to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .and_then(|value| value.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if rest.len() >= length {
                    let status = head.split(' ').nth(1)?.parse().ok()?;
                    return Some(Answer {
                        status,
                        head,
                        body: rest.to_owned(),
                        after: started.elapsed(),
                    });
                }
            }
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test]
async fn silent_connections_on_both_ports_are_closed_in_time_and_a_patient_webhook_gets_through() {
    // Arrange: 300 descriptors, and two-second deadlines for a first request / the preface.
    let service = Service::start(
        Some(300),
        &[
            ("READINESS_HTTP_HEADER_TIMEOUT_SECS", "2"),
            ("READINESS_GRPC_HANDSHAKE_TIMEOUT_SECS", "2"),
        ],
    )
    .await;
    let timeout = Duration::from_secs(2);

    // Act: 150 silent connections to each port, then a webhook and a probe that wait their turn.
    let mut closings = Vec::new();
    for i in 0..300 {
        let port = if i % 2 == 0 {
            service.http
        } else {
            service.grpc
        };
        let stream = TcpStream::connect(port).await.unwrap();
        let patience = Duration::from_secs(40);
        closings.push(tokio::spawn(time_until_closed(
            stream,
            Instant::now(),
            patience,
        )));
    }
    let patient = reqwest::Client::builder()
        .timeout(Duration::from_secs(25))
        .build()
        .unwrap();
    let webhook = tokio::spawn(signed_webhook(&patient, service.url("/webhooks/argyle")).send());
    let probe = tokio::spawn(patient.get(service.url("/readyz")).send());

    // Assert: every silent connection was closed by the server; those accepted at once after the
    // timeout, the rest (waiting in the listen backlog while the cap was reached) one timeout
    // later; the patient requests were answered; accept never ran out of descriptors.
    let mut times = Vec::new();
    for closing in closings {
        times.push(closing.await.unwrap());
    }
    let still_open = times.iter().filter(|time| time.is_none()).count();
    assert_eq!(
        still_open,
        0,
        "silent connections still open after 40 s: {still_open} of 300\n{}",
        service.logs()
    );
    let times: Vec<Duration> = times.into_iter().flatten().collect();
    let (fastest, slowest) = (times.iter().min().unwrap(), times.iter().max().unwrap());
    assert!(
        *fastest >= timeout - Duration::from_millis(500),
        "closed before the timeout: {fastest:?}"
    );
    assert!(
        *slowest < 2 * timeout + Duration::from_secs(15),
        "the last silent connection was closed after {slowest:?}"
    );
    let webhook = webhook
        .await
        .unwrap()
        .expect("the webhook is answered within 25 s");
    assert_eq!(webhook.status(), 200);
    let probe = probe.await.unwrap().expect("/readyz answers within 25 s");
    assert_eq!(probe.status(), 200);
    let logs = service.logs();
    assert!(
        !logs.contains("Too many open files") && !logs.contains("accept failed"),
        "{logs}"
    );
    assert!(
        logs.contains("connection caps per listener"),
        "the caps are logged at start-up: {logs}"
    );
}

#[tokio::test]
async fn out_of_descriptors_accept_backs_off_and_logs_rarely_instead_of_spinning() {
    // Arrange: so few descriptors that the minimum caps (8 per listener) exceed what is left.
    let service = Service::start(Some(26), &[("READINESS_HTTP_HEADER_TIMEOUT_SECS", "4")]).await;
    let cpu_before = service.cpu_time();
    let started = Instant::now();

    // Act: 16 connections (8 per port): accept runs out of descriptors part-way.
    let mut silent = Vec::new();
    for i in 0..16 {
        let port = if i % 2 == 0 {
            service.http
        } else {
            service.grpc
        };
        silent.push(TcpStream::connect(port).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (cpu, wall) = (service.cpu_time() - cpu_before, started.elapsed());

    // Assert: the error was met and logged, at most every 5 s per listener, and the process
    // waited rather than retrying in a loop.
    let logs = service.logs();
    let failures = logs.matches("accept failed").count();
    assert!(
        (1..=4).contains(&failures),
        "{failures} accept failures logged: {logs}"
    );
    assert!(logs.contains("Too many open files"), "{logs}");
    assert!(
        cpu < wall / 4,
        "the process used {cpu:?} of CPU in {wall:?}: a busy loop"
    );

    // ... and once the silent connections are closed, it serves again.
    drop(silent);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(25))
        .build()
        .unwrap();
    let response = signed_webhook(&client, service.url("/webhooks/argyle"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_client_trickling_request_headers_is_cut_off_at_the_header_timeout() {
    let service = Service::start(None, &[("READINESS_HTTP_HEADER_TIMEOUT_SECS", "2")]).await;
    let mut stream = TcpStream::connect(service.http).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let started = Instant::now();

    // A header line every 300 ms keeps bytes coming, but never finishes the head.
    let mut closed_after = None;
    while started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut byte = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(1), stream.read(&mut byte)).await
        {
            closed_after = Some(started.elapsed());
            break;
        }
    }

    let closed_after = closed_after.expect("the trickling connection is closed");
    assert!(
        closed_after >= Duration::from_millis(1500) && closed_after < Duration::from_secs(10),
        "closed after {closed_after:?}"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_stays_for_the_idle_timeout_and_is_then_closed() {
    let service = Service::start(
        None,
        &[
            ("READINESS_HTTP_HEADER_TIMEOUT_SECS", "1"),
            ("READINESS_HTTP_IDLE_TIMEOUT_SECS", "3"),
        ],
    )
    .await;
    let mut stream = TcpStream::connect(service.http).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut stream, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(answer.status, 200);

    let idle_for = time_until_closed(stream, Instant::now(), Duration::from_secs(30))
        .await
        .expect("the idle connection is closed");

    // Longer than the first-request deadline: idle connections have their own limit.
    assert!(
        idle_for >= Duration::from_millis(2500) && idle_for < Duration::from_secs(13),
        "closed after {idle_for:?} idle"
    );
}

#[tokio::test]
async fn a_grpc_peer_that_stops_answering_keepalive_pings_is_dropped() {
    let service = Service::start(None, &[("READINESS_GRPC_KEEPALIVE_SECS", "1")]).await;
    let mut stream = TcpStream::connect(service.grpc).await.unwrap();
    // The HTTP/2 preface and an empty SETTINGS frame: a valid start, then nothing, ever.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();

    let dropped_after = time_until_closed(stream, Instant::now(), Duration::from_secs(30))
        .await
        .expect("the dead peer is dropped");

    // One interval of silence before the ping, one more for its answer.
    assert!(
        dropped_after >= Duration::from_millis(1500) && dropped_after < Duration::from_secs(12),
        "dropped after {dropped_after:?}"
    );
}

/// Opens `count` connections from `from` that each send [`trickle`], and reads their answers in
/// the background: `(answers so far, the tasks reading them)`.
async fn trickling_requests(
    from: [u8; 4],
    to: SocketAddr,
    count: usize,
    extra_header: &str,
) -> (
    Arc<Mutex<Vec<Answer>>>,
    Vec<tokio::task::JoinHandle<Option<()>>>,
) {
    let answers = Arc::new(Mutex::new(Vec::new()));
    let request = trickle(extra_header);
    let mut readers = Vec::new();
    for _ in 0..count {
        let mut stream = connect_from(from, to).await;
        stream.write_all(request.as_bytes()).await.unwrap();
        let answers = answers.clone();
        readers.push(tokio::spawn(async move {
            let answer = read_answer(&mut stream, Duration::from_secs(60)).await?;
            answers.lock().unwrap().push(answer);
            Some(())
        }));
    }
    (answers, readers)
}

/// Waits until at least `count` answers have arrived, for at most `patience`.
async fn until_answered(answers: &Mutex<Vec<Answer>>, count: usize, patience: Duration) {
    let started = Instant::now();
    while answers.lock().unwrap().len() < count && started.elapsed() < patience {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_source_trickling_bodies_cannot_hold_the_ingress_from_another_source() {
    // Arrange: default limits (512 in flight, 128 per source), a five-second body deadline.
    let body_timeout = Duration::from_secs(5);
    let service = Service::start(None, &[("READINESS_HTTP_BODY_TIMEOUT_SECS", "5")]).await;

    // Act: 520 requests from 127.0.0.2 that send headers and one body byte, then a sender on
    // 127.0.0.3.
    let (answers, readers) = trickling_requests([127, 0, 0, 2], service.http, 520, "").await;
    // The excess over the per-source cap is shed at once; the rest hold their slots.
    until_answered(&answers, 520 - 128, Duration::from_secs(15)).await;
    let sender = reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, 3]))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let sent = Instant::now();
    let response = signed_webhook(&sender, service.url("/webhooks/argyle"))
        .send()
        .await
        .unwrap();

    // Assert: the sender is served at once, long before the 30 s request timeout.
    let (status, took) = (response.status(), sent.elapsed());
    let answer = response.text().await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert!(took < Duration::from_secs(10), "answered after {took:?}");

    // ... and every trickling request was shed at once or cut at the body deadline.
    for reader in readers {
        reader
            .await
            .unwrap()
            .expect("every trickling request is answered");
    }
    let answers = answers.lock().unwrap();
    let cut: Vec<_> = answers.iter().filter(|a| a.status == 408).collect();
    let shed: Vec<_> = answers.iter().filter(|a| a.status == 503).collect();
    assert_eq!(cut.len() + shed.len(), 520, "only 408 and 503 answers");
    assert!(
        cut.len() <= 128,
        "{} held past the per-source cap",
        cut.len()
    );
    for answer in &cut {
        assert!(
            answer.body.contains("\"error\":\"body_timeout\""),
            "{}",
            answer.body
        );
        assert!(
            answer.after >= body_timeout - Duration::from_millis(500)
                && answer.after < body_timeout + Duration::from_secs(15),
            "cut after {:?}",
            answer.after
        );
    }
    for answer in &shed {
        assert!(
            answer.body.contains("\"error\":\"overloaded\""),
            "{}",
            answer.body
        );
        assert!(answer.head.contains("retry-after: 5"), "{}", answer.head);
    }
}

#[tokio::test]
async fn a_source_outside_the_allow_list_is_refused_403_before_its_body_is_read() {
    let service = Service::start(
        None,
        &[
            ("READINESS_HTTP_ALLOWED_CIDRS", "127.0.0.1/32"),
            ("READINESS_HTTP_BODY_TIMEOUT_SECS", "10"),
        ],
    )
    .await;
    // Headers that promise 100 bytes, then one byte and silence: waiting for the body would
    // take the 10 s body timeout.
    let mut stream = connect_from([127, 0, 0, 2], service.http).await;
    stream.write_all(trickle("").as_bytes()).await.unwrap();
    let answer = read_answer(&mut stream, Duration::from_secs(5))
        .await
        .expect("an answer without the body");

    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(answer.body.contains("forbidden_source"), "{}", answer.body);
    assert!(
        answer.after < Duration::from_secs(5),
        "answered after {:?}",
        answer.after
    );
}

#[tokio::test]
async fn one_source_cannot_take_every_in_flight_slot() {
    // Arrange: 8 requests in flight in all, so 2 per source by default.
    let service = Service::start(
        None,
        &[
            ("READINESS_HTTP_MAX_IN_FLIGHT", "8"),
            ("READINESS_HTTP_BODY_TIMEOUT_SECS", "30"),
        ],
    )
    .await;

    // Act: one source opens as many stalled requests as there are slots.
    let (answers, _readers) = trickling_requests([127, 0, 0, 2], service.http, 8, "").await;
    until_answered(&answers, 6, Duration::from_secs(10)).await;
    let other = reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, 3]))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let response = signed_webhook(&other, service.url("/webhooks/argyle"))
        .send()
        .await
        .unwrap();

    // Assert: it holds two; the other six were shed like the global excess; others get in.
    {
        let answers = answers.lock().unwrap();
        assert_eq!(answers.len(), 6, "answered at once");
        assert!(answers.iter().all(|a| a.status == 503
            && a.head.contains("retry-after: 5")
            && a.body.contains("\"error\":\"overloaded\"")));
    }
    assert_eq!(response.status(), 200);
    let metrics = reqwest::get(service.url("/metrics")).await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|line| line == "readiness_http_requests_shed_total{reason=\"source_limit\"} 6"),
        "the six shed requests are counted:\n{metrics}"
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_per_source_cap_counts_the_forwarded_client() {
    let service = Service::start(
        None,
        &[
            ("READINESS_HTTP_MAX_IN_FLIGHT", "8"),
            ("READINESS_HTTP_MAX_IN_FLIGHT_PER_SOURCE", "3"),
            ("READINESS_HTTP_BODY_TIMEOUT_SECS", "30"),
            ("READINESS_HTTP_CLIENT_IP_HEADER", "x-forwarded-for"),
            ("READINESS_HTTP_TRUSTED_PROXIES", "127.0.0.0/8"),
        ],
    )
    .await;

    // Everything comes through the proxy at 127.0.0.1; one forwarded client stalls five requests.
    let (answers, _readers) = trickling_requests(
        [127, 0, 0, 1],
        service.http,
        5,
        "X-Forwarded-For: 203.0.113.7",
    )
    .await;
    until_answered(&answers, 2, Duration::from_secs(10)).await;
    let proxy = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let other_client = signed_webhook(&proxy, service.url("/webhooks/argyle"))
        .header("x-forwarded-for", "198.51.100.1")
        .send()
        .await
        .unwrap();

    assert_eq!(
        answers.lock().unwrap().len(),
        2,
        "the stalling client holds 3, the other 2 are shed"
    );
    assert_eq!(
        other_client.status(),
        200,
        "another client behind the same proxy is not affected"
    );
}

/// The two exposure warnings, as they appear in the log.
const HTTP_EXPOSED: &str = "anyone who can reach it can hold request slots";
const TOKENS_IN_CLEAR: &str = "tokens cross the network unencrypted";

#[tokio::test]
async fn start_up_warns_about_an_open_http_listener_and_bearer_tokens_over_plaintext() {
    let token = readiness::grpc::hash_token("a-token");
    let exposed = Service::start(
        None,
        &[
            ("READINESS_HTTP_ADDR", "0.0.0.0:0"),
            ("READINESS_GRPC_ADDR", "0.0.0.0:0"),
            ("READINESS_GRPC_TOKEN_SHA256", &token),
        ],
    )
    .await;
    let logs = exposed.logs();
    assert!(logs.contains(HTTP_EXPOSED), "{logs}");
    assert!(logs.contains(TOKENS_IN_CLEAR), "{logs}");
    drop(exposed);

    // The same exposure with its protection: an allow-list, and TLS for the tokens.
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let protected = Service::start(
        None,
        &[
            ("READINESS_HTTP_ADDR", "0.0.0.0:0"),
            ("READINESS_GRPC_ADDR", "0.0.0.0:0"),
            ("READINESS_GRPC_TOKEN_SHA256", &token),
            ("READINESS_HTTP_ALLOWED_CIDRS", "34.122.50.253/32"),
            ("READINESS_GRPC_TLS_CERT", cert.to_str().unwrap()),
            ("READINESS_GRPC_TLS_KEY", key.to_str().unwrap()),
        ],
    )
    .await;
    // And tokens on loopback, where plaintext does not leave the machine.
    let local = Service::start(None, &[("READINESS_GRPC_TOKEN_SHA256", &token)]).await;

    for logs in [protected.logs(), local.logs()] {
        assert!(!logs.contains(HTTP_EXPOSED), "{logs}");
        assert!(!logs.contains(TOKENS_IN_CLEAR), "{logs}");
    }
}
