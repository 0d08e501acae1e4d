//! The bad-input matrix for `POST /webhooks/argyle`: every case gets its exact status, never a
//! 5xx, the `error` code of the README's table, a message naming the bad field, and stores a
//! delivery only where it should (signed bodies are kept for inspection, byte for byte, and the 400
//! answer gives their `delivery_id`; unsigned, oversized or mistyped requests leave no trace).

use readiness::domain::signature::{Secret, sign};
use readiness::store::entities::delivery;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{SECRET, TestApp, new_id};

const LIMIT: usize = 256 * 1024;

/// How the body goes on the wire.
enum Wire {
    /// With `Content-Length`.
    Sized,
    /// `Transfer-Encoding: chunked`, in pieces of this size.
    Chunked(usize),
}

struct Case {
    name: &'static str,
    method: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    wire: Wire,
    status: u16,
    stored: bool,
    /// For a 400: the field the message names (the text before its first `: `).
    path: Option<&'static str>,
}

fn signed(name: &'static str, body: impl Into<Vec<u8>>, status: u16, stored: bool) -> Case {
    let body = body.into();
    let signature = sign(&Secret::new(SECRET), &body);
    Case {
        name,
        method: "POST",
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-argyle-signature".into(), signature),
        ],
        body,
        wire: Wire::Sized,
        status,
        stored,
        path: None,
    }
}

fn with_headers(mut case: Case, headers: &[(&str, &str)]) -> Case {
    case.headers = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    case
}

fn sig(value: &str) -> (String, String) {
    ("x-argyle-signature".into(), value.into())
}

fn connected() -> String {
    json!({"event": "accounts.connected", "name": "matrix", "data": {"account": new_id(), "user": new_id()}}).to_string()
}

fn event(event: &str, data: serde_json::Value) -> String {
    json!({"event": event, "name": "matrix", "data": data}).to_string()
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();

    // Signature header: each case builds its headers from the body's good signature and one
    // made with another secret.
    type Headers = fn(&str, &str) -> Vec<(String, String)>;
    let header_cases: [(&'static str, Headers, u16, bool); 10] = [
        ("missing signature", |_, _| vec![], 401, false),
        ("empty signature", |_, _| vec![sig("")], 401, false),
        (
            "odd-length signature",
            |good, _| vec![sig(&good[..127])],
            401,
            false,
        ),
        (
            "non-hex signature",
            |_, _| vec![sig(&"z".repeat(128))],
            401,
            false,
        ),
        (
            "short signature",
            |good, _| vec![sig(&good[..126])],
            401,
            false,
        ),
        (
            "prefixed signature",
            |good, _| vec![sig(&format!("sha512={good}"))],
            401,
            false,
        ),
        (
            "signature for another secret",
            |_, other| vec![sig(other)],
            401,
            false,
        ),
        (
            "duplicated signature headers, one bad",
            |good, other| vec![sig(good), sig(other)],
            401,
            false,
        ),
        (
            "duplicated signature headers, both good",
            |good, _| vec![sig(good), sig(good)],
            401,
            false,
        ),
        (
            "upper-case hex signature",
            |good, _| vec![sig(&good.to_uppercase())],
            200,
            true,
        ),
    ];
    for (name, headers, status, stored) in header_cases {
        let body = connected();
        let good = sign(&Secret::new(SECRET), body.as_bytes());
        let other = sign(&Secret::new("not-our-secret"), body.as_bytes());
        let mut case = signed(name, body, status, stored);
        case.headers.truncate(1);
        case.headers.extend(headers(&good, &other));
        cases.push(case);
    }
    let mut padded = signed("white-space-padded signature", connected(), 200, true);
    padded.headers[1].1 = format!("  {}\t", padded.headers[1].1);
    cases.push(padded);

    // The signature covers the exact bytes.
    let body = connected();
    let signature = sign(&Secret::new(SECRET), body.as_bytes());
    let mut truncated = signed(
        "truncated body",
        &body.as_bytes()[..body.len() - 5],
        401,
        false,
    );
    truncated.headers[1].1 = signature.clone();
    cases.push(truncated);
    let mut appended = signed("appended body", format!("{body} "), 401, false);
    appended.headers[1].1 = signature;
    cases.push(appended);

    // Content types.
    for (name, content_type, status, stored) in [
        ("text/plain", Some("text/plain"), 415, false),
        ("application/xml", Some("application/xml"), 415, false),
        (
            "multipart form",
            Some("multipart/form-data; boundary=x"),
            415,
            false,
        ),
        ("no content type", None, 415, false),
        (
            "json with charset",
            Some("application/json; charset=utf-8"),
            200,
            true,
        ),
        ("upper-case json type", Some("APPLICATION/JSON"), 200, true),
        (
            "vendor +json type",
            Some("application/vnd.argyle+json"),
            200,
            true,
        ),
    ] {
        let mut case = signed(name, connected(), status, stored);
        case.headers.retain(|(n, _)| n != "content-type");
        if let Some(value) = content_type {
            case.headers.push(("content-type".into(), value.into()));
        }
        cases.push(case);
    }

    // Sizes.
    let big = format!(
        r#"{{"event":"padding","data":{{}},"pad":"{}"}}"#,
        "a".repeat(LIMIT)
    );
    cases.push(signed(
        "over the limit with Content-Length",
        big.clone(),
        413,
        false,
    ));
    let mut chunked_big = signed("over the limit, chunked", big, 413, false);
    chunked_big.wire = Wire::Chunked(4096);
    cases.push(chunked_big);
    let mut chunked_small = signed("under the limit, chunked", connected(), 200, true);
    chunked_small.wire = Wire::Chunked(16);
    cases.push(chunked_small);
    let skeleton = r#"{"event":"padding","data":{},"pad":""}"#;
    let exact = format!(
        r#"{{"event":"padding","data":{{}},"pad":"{}"}}"#,
        "b".repeat(LIMIT - skeleton.len())
    );
    assert_eq!(exact.len(), LIMIT);
    cases.push(signed("exactly at the limit", exact, 200, true));

    // Signed bodies that are not valid events: 400, kept for inspection.
    let user = new_id();
    let account = new_id();
    let nested = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let many: Vec<_> = (0..1001)
        .map(|_| json!({"id": new_id(), "last_synced_at": "2024-01-08T12:00:00Z"}))
        .collect();
    // Each with the field its message must name ("$" is the body as a whole).
    let invalid: Vec<(&'static str, Vec<u8>, &'static str)> = vec![
        ("empty body", vec![], "$"),
        ("invalid UTF-8", vec![0x7b, 0xff, 0xfe, 0x7d], "$"),
        ("invalid JSON", b"{\"event\": ".to_vec(), "$"),
        ("deeply nested JSON", nested.into_bytes(), "$"),
        ("a JSON array", b"[1,2,3]".to_vec(), "$"),
        ("a JSON string", b"\"accounts.connected\"".to_vec(), "$"),
        ("JSON null", b"null".to_vec(), "$"),
        (
            "a number out of range",
            br#"{"event":"x","data":{"n":1e999}}"#.to_vec(),
            "$",
        ),
        (
            "a byte-order mark",
            [&[0xef, 0xbb, 0xbf][..], connected().as_bytes()].concat(),
            "$",
        ),
        (
            "missing event",
            json!({"data": {"user": user}}).to_string().into_bytes(),
            "$",
        ),
        (
            "missing data",
            json!({"event": "accounts.connected"})
                .to_string()
                .into_bytes(),
            "data",
        ),
        (
            "event not a string",
            json!({"event": 7, "data": {}}).to_string().into_bytes(),
            "$.event",
        ),
        (
            "data not an object",
            event("accounts.connected", json!([user])).into_bytes(),
            "data",
        ),
        (
            "user not a UUID",
            event(
                "accounts.connected",
                json!({"user": "u-1", "account": account}),
            )
            .into_bytes(),
            "data.user",
        ),
        (
            "account not a UUID",
            event("accounts.removed", json!({"user": user, "account": 12})).into_bytes(),
            "data.account",
        ),
        (
            "ready account id not a UUID",
            event(
                "reports.ready",
                json!({"user": user, "accounts": [{"id": "x", "last_synced_at": null}]}),
            )
            .into_bytes(),
            "data.accounts[0].id",
        ),
        (
            "last_synced_at not a time",
            event(
                "reports.ready",
                json!({"user": user, "accounts": [{"id": account, "last_synced_at": "yesterday"}]}),
            )
            .into_bytes(),
            "data.accounts[0].last_synced_at",
        ),
        (
            "accounts not an array",
            event(
                "reports.ready",
                json!({"user": user, "accounts": {"id": account}}),
            )
            .into_bytes(),
            "data.accounts",
        ),
        (
            "a huge accounts array",
            event("reports.ready", json!({"user": user, "accounts": many})).into_bytes(),
            "data.accounts",
        ),
        (
            "error code not a string",
            event(
                "accounts.failed",
                json!({"user": user, "account": account, "error_code": 5}),
            )
            .into_bytes(),
            "data.error_code",
        ),
        (
            "resource not an object",
            event(
                "accounts.updated",
                json!({"user": user, "account": account, "resource": "x"}),
            )
            .into_bytes(),
            "data.resource",
        ),
        (
            "NUL inside a string",
            event(
                "accounts.failed",
                json!({"user": user, "account": account, "error_message": "a\u{0}b"}),
            )
            .into_bytes(),
            "data.error_message",
        ),
        (
            "an over-long external id",
            event(
                "reports.ready",
                json!({"user": user, "external_id": "e".repeat(300), "accounts": []}),
            )
            .into_bytes(),
            "data.external_id",
        ),
        (
            "an over-long report id",
            event(
                "reports.generated",
                json!({"user": user, "type": "voie", "report_id": "r".repeat(300)}),
            )
            .into_bytes(),
            "data.report_id",
        ),
        (
            "an over-long event name",
            event(&"e".repeat(300), json!({})).into_bytes(),
            "event",
        ),
        (
            "an empty report type",
            event("reports.generated", json!({"user": user, "type": " "})).into_bytes(),
            "data.type",
        ),
    ];
    for (name, body, path) in invalid {
        let mut case = signed(name, body, 400, true);
        case.path = Some(path);
        cases.push(case);
    }

    // Accepted as they are.
    cases.push(signed(
        "an unknown event name",
        event("payroll_documents.added", json!({"x": 1})),
        200,
        true,
    ));
    cases.push(signed(
        "unknown extra fields",
        event(
            "accounts.connected",
            json!({"user": new_id(), "account": new_id(), "brand_new": {"a": [1]}}),
        ),
        200,
        true,
    ));
    cases.push(signed(
        "duplicate keys (the last wins)",
        format!(r#"{{"event":"nothing.known","event":"accounts.removed","data":{{"user":"{}","account":"{}"}}}}"#, new_id(), new_id()),
        200,
        true,
    ));
    let mut get = signed("GET instead of POST", connected(), 405, false);
    get.method = "GET";
    cases.push(get);
    cases.push(with_headers(
        signed("no headers at all", connected(), 415, false),
        &[],
    ));
    cases
}

/// Sends one request over a fresh connection and returns the status code and the body.
async fn send(app: &TestApp, case: &Case) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(app.http).await.unwrap();
    let mut head = format!(
        "{} /webhooks/argyle HTTP/1.1\r\nHost: test\r\nConnection: close\r\n",
        case.method
    );
    for (name, value) in &case.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    match case.wire {
        Wire::Sized => {
            head.push_str(&format!("Content-Length: {}\r\n\r\n", case.body.len()));
            stream.write_all(head.as_bytes()).await.unwrap();
            // The server may answer (413) and close before reading it all.
            let _ = stream.write_all(&case.body).await;
        }
        Wire::Chunked(size) => {
            head.push_str("Transfer-Encoding: chunked\r\n\r\n");
            stream.write_all(head.as_bytes()).await.unwrap();
            for chunk in case.body.chunks(size) {
                let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
                if stream.write_all(&framed).await.is_err() {
                    break;
                }
            }
            let _ = stream.write_all(b"0\r\n\r\n").await;
        }
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stream.read_to_end(&mut answer),
    )
    .await;
    assert!(read.is_ok(), "{}: no answer", case.name);
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{}: not an HTTP answer: {text:?}", case.name));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, body.to_owned())
}

/// The `error` code the README's answer table gives each refusal.
fn error_code(status: u16) -> Option<&'static str> {
    match status {
        400 => Some("invalid_event"),
        401 => Some("invalid_signature"),
        413 => Some("body_too_large"),
        415 => Some("unsupported_media_type"),
        _ => None,
    }
}

/// What is wrong with `answer` to `case`, given the delivery rows stored before and after it.
fn check_answer(
    case: &Case,
    body: &str,
    before: &[delivery::Model],
    after: &[delivery::Model],
) -> Option<String> {
    let new_row = after
        .iter()
        .find(|row| !before.iter().any(|b| b.id == row.id));
    if let Some(row) = new_row.filter(|row| row.body != case.body) {
        return Some(format!(
            "stored body {:?} is not the body sent",
            String::from_utf8_lossy(&row.body)
        ));
    }
    if case.status == 405 {
        return None;
    }
    let answer: serde_json::Value = match serde_json::from_str(body) {
        Ok(answer) => answer,
        Err(_) => return Some(format!("not a JSON answer: {body:?}")),
    };
    if case.status == 200 {
        let id = answer["delivery_id"].as_i64();
        return (!["applied", "ignored"].contains(&answer["status"].as_str().unwrap_or_default())
            || id.is_none()
            || id != new_row.map(|row| row.id))
        .then(|| format!("answer {answer} (stored row {:?})", new_row.map(|r| r.id)));
    }
    if answer["error"].as_str() != error_code(case.status) {
        return Some(format!(
            "error {} (want {:?})",
            answer["error"],
            error_code(case.status)
        ));
    }
    let message = answer["message"].as_str().unwrap_or_default();
    if message.is_empty() {
        return Some("no message".into());
    }
    let Some(path) = case.path else {
        return answer
            .get("delivery_id")
            .map(|id| format!("delivery_id {id} for a request that stored nothing"));
    };
    if message.split_once(": ").map(|(named, _)| named) != Some(path) {
        return Some(format!("message {message:?} (want it to name {path})"));
    }
    let Some(row) = new_row else {
        return Some("nothing stored".into());
    };
    if answer["delivery_id"].as_i64() != Some(row.id)
        || row.status != "rejected"
        || row.error.as_deref() != Some(message)
    {
        return Some(format!(
            "delivery_id {} for stored row {} ({}, {:?})",
            answer["delivery_id"], row.id, row.status, row.error
        ));
    }
    None
}

#[tokio::test]
async fn every_bad_input_gets_its_exact_status_error_code_and_field_and_stores_only_what_it_should()
{
    let app = TestApp::spawn_with(|settings| settings.max_body_bytes = LIMIT).await;
    let cases = cases();
    assert!(cases.len() >= 40, "the matrix has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let before = app.deliveries().await;
        let (status, body) = send(&app, case).await;
        let after = app.deliveries().await;
        let stored = after.len() == before.len() + 1;
        if status >= 500
            || status != case.status
            || stored != case.stored
            || after.len() > before.len() + 1
        {
            failures.push(format!(
                "{}: status {status} (want {}), stored {stored} (want {})",
                case.name, case.status, case.stored
            ));
        } else if let Some(problem) = check_answer(case, &body, &before, &after) {
            failures.push(format!("{}: {problem}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // The server is still healthy after all of it.
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_delivery_sent_fifty_times_at_once_changes_state_once_and_logs_one_event() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    // One process sends every copy of a body to the same committer, one batch after another. On
    // PostgreSQL the copies are spread over two replicas, so two transactions insert the same
    // body at the same moment and the unique index, not a queue, decides. SQLite is one process.
    let mut targets = vec![app.clone()];
    if app.on_postgres() {
        targets.push(std::sync::Arc::new(app.replica(|_| {}).await));
    }
    let (user, account) = (new_id(), new_id());
    let body = crate::helpers::body::connected(&user, &account);
    let events_before = app.event_count().await;

    let sends: Vec<_> = (0..50)
        .map(|i| {
            let (target, body) = (targets[i % targets.len()].clone(), body.clone());
            tokio::spawn(async move { target.deliver(&body).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for send in sends {
        let (status, answer) = send.await.unwrap();
        statuses.push((
            status,
            answer["status"].as_str().unwrap_or_default().to_owned(),
        ));
    }

    assert!(
        statuses.iter().all(|(status, _)| *status == 200),
        "{statuses:?}"
    );
    let applied = statuses
        .iter()
        .filter(|(_, outcome)| outcome == "applied")
        .count();
    assert_eq!(applied, 1, "exactly one delivery applied: {statuses:?}");
    assert_eq!(app.deliveries().await.len(), 1);
    // A new user with one new account: one account event and one readiness event, once.
    assert_eq!(app.event_count().await, events_before + 2);
}
