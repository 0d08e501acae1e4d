//! A full disk under the SQLite file: the service, as a child process, stores its database on a
//! tmpfs the test mounts. Senders fill it until writes fail, the test frees space, three times,
//! then stops the service with SIGTERM and starts it again. Every delivery answered 2xx
//! must be stored and applied exactly once; the probes must say "not ready" while writes fail
//! (queries are still answered) and "ready" again, with 200s, within 5 s of space coming back,
//! without a restart.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use readiness::domain::signature::{Secret, sign};
use readiness::store::entities::{delivery, report};
use sea_orm::{Database, EntityTrait};
use tokio::sync::Mutex;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{SECRET, body, new_id, sha};
use crate::process::ServeProcess;

/// The README's promise: a failing database is probed with a tiny write at least this often, so
/// probes and answers are back this long after space is.
const RECOVERY: Duration = Duration::from_secs(5);

/// Room left for the senders to fill in each cycle; everything else is taken by a ballast file
/// that is deleted to free space. Freeing far more than recovery needs keeps the cycles
/// independent of when SQLite checkpoints its write-ahead log into the database file.
const FILL_ROOM: usize = 3 << 20;

/// Allowance on top of a promised delay for a busy test machine.
const MARGIN: Duration = Duration::from_secs(2);

/// How often the service re-checks the database for gRPC health.
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);

/// True (with a note on stderr) when the suite runs against PostgreSQL: the test needs the
/// SQLite file on a filesystem it controls.
pub fn sqlite_only(test: &str) -> bool {
    let postgres =
        std::env::var("READINESS_TEST_DATABASE_URL").is_ok_and(|url| url.starts_with("postgres"));
    if postgres {
        eprintln!("{test}: skipped, SQLite only (READINESS_TEST_DATABASE_URL names PostgreSQL)");
    }
    !postgres
}

/// A tmpfs mounted on a fresh directory, unmounted on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `4m`). When mounting is not permitted, returns `None` after
    /// saying so, unless `READINESS_TEST_REQUIRE_TMPFS=1` (set by `.ci/run`) makes it a failure.
    pub fn mount(size: &str, test: &str) -> Option<Self> {
        let dir = tempfile::Builder::new()
            .prefix("readiness-tmpfs-")
            .tempdir()
            .unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        let refused = match output {
            Ok(output) if output.status.success() => return Some(Self { dir }),
            Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            Err(error) => error.to_string(),
        };
        let message = format!("{test}: cannot mount a tmpfs ({refused}); it needs root");
        if std::env::var("READINESS_TEST_REQUIRE_TMPFS").is_ok_and(|value| value == "1") {
            panic!("{message}, and READINESS_TEST_REQUIRE_TMPFS=1 requires it");
        }
        eprintln!("{message}: skipped");
        None
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|status| status.success());
        if !unmounted {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Writes up to `bytes` into `path`, stopping quietly when the filesystem is full.
fn write_file(path: &Path, bytes: usize) -> usize {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5a_u8; 16 * 1024];
    let mut written = 0;
    while written < bytes {
        let size = chunk.len().min(bytes - written);
        if file.write_all(&chunk[..size]).is_err() || file.sync_all().is_err() {
            break;
        }
        written += size;
    }
    written
}

/// Bytes free on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> u64 {
    let output = Command::new("stat")
        .args(["-f", "-c", "%a %S"])
        .arg(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let mut numbers = text.split_whitespace().map(|n| n.parse::<u64>().unwrap());
    numbers.next().unwrap() * numbers.next().unwrap()
}

/// A delivery answered 2xx: what must be found after the restart.
#[derive(Debug, Clone)]
struct Acknowledged {
    sha: String,
    report_id: String,
}

/// Everything the test saw; asserted at the end so that one run reports every broken promise.
#[derive(Debug, Default)]
struct Observed {
    acknowledged: Vec<Acknowledged>,
    /// Answers other than 200 and 503, with their bodies.
    unexpected: Vec<(u16, String)>,
    cycles: Vec<Cycle>,
}

#[derive(Debug, Default)]
struct Cycle {
    /// Bytes free when the senders started.
    free_at_start: u64,
    /// 2xx while filling the disk.
    filled_with: usize,
    /// 503 answers while filling.
    refused_while_filling: usize,
    /// `/readyz` said 503 (within `RECOVERY`) once writes failed and the disk was full.
    readyz_503_while_full: bool,
    /// gRPC health said NOT_SERVING (within `RECOVERY`) once writes failed.
    health_not_serving_while_full: bool,
    /// What `ListUsers` answered while the disk was full: users listed, or the status code.
    listed_while_full: Option<Result<usize, tonic::Code>>,
    /// A small delivery sent while the disk was full: its status (SQLite may still find room
    /// for it in its write-ahead log, which it reuses rather than grows after a checkpoint).
    small_while_full: u16,
    /// From freeing space to the first `/readyz` 200, with no delivery sent meanwhile.
    ready_after: Option<Duration>,
    /// From freeing space to gRPC health SERVING.
    serving_after: Option<Duration>,
    /// Statuses of the 20 small deliveries sent once space was back.
    small_after: Vec<u16>,
}

/// A reports.generated delivery padded to about 40 KB, distinct from every other.
fn large_delivery() -> (String, String) {
    let report_id = new_id();
    let mut value: serde_json::Value =
        serde_json::from_str(&body::generated(&new_id(), "voie", Some(&report_id))).unwrap();
    value["data"]["padding"] = serde_json::json!(format!("{}{}", new_id(), "x".repeat(40_000)));
    (value.to_string(), report_id)
}

fn small_delivery() -> (String, String) {
    let report_id = new_id();
    (
        body::generated(&new_id(), "voie", Some(&report_id)),
        report_id,
    )
}

/// Posts one signed delivery; records a 2xx; returns the status (0 if no answer).
async fn send(
    client: &reqwest::Client,
    server: &ServeProcess,
    (delivery, report_id): (String, String),
    observed: &Mutex<Observed>,
) -> u16 {
    let sent = client
        .post(server.url("/webhooks/argyle"))
        .header("content-type", "application/json")
        .header(
            "x-argyle-signature",
            sign(&Secret::new(SECRET), delivery.as_bytes()),
        )
        .body(delivery.clone())
        .send()
        .await;
    let Ok(response) = sent else { return 0 };
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let mut observed = observed.lock().await;
    if (200..300).contains(&status) {
        observed.acknowledged.push(Acknowledged {
            sha: sha(&delivery),
            report_id,
        });
    } else if status != 503 {
        observed.unexpected.push((status, text));
    }
    status
}

/// Four senders post large deliveries until each has been refused three times in a row.
async fn fill_until_writes_fail(server: &Arc<ServeProcess>, observed: &Arc<Mutex<Observed>>) {
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (server, observed) = (server.clone(), observed.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                let (mut refused_in_a_row, mut acked, mut refused) = (0, 0, 0);
                let deadline = Instant::now() + Duration::from_secs(60);
                while refused_in_a_row < 3 && Instant::now() < deadline {
                    match send(&client, &server, large_delivery(), &observed).await {
                        200..=299 => {
                            refused_in_a_row = 0;
                            acked += 1;
                        }
                        _ => {
                            refused_in_a_row += 1;
                            refused += 1;
                        }
                    }
                }
                (acked, refused)
            })
        })
        .collect();
    let (mut acked, mut refused) = (0, 0);
    for sender in senders {
        let (a, r) = sender.await.unwrap();
        acked += a;
        refused += r;
    }
    let mut observed = observed.lock().await;
    observed.cycles.push(Cycle {
        filled_with: acked,
        refused_while_filling: refused,
        ..Cycle::default()
    });
}

/// Polls `check` until it is true or `within` has passed; how long it took.
async fn time_until<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() <= within {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_loses_no_acknowledged_delivery_and_the_service_recovers_when_space_returns() {
    const TEST: &str = "disk_full";
    if !sqlite_only(TEST) {
        return;
    }
    let Some(disk) = Tmpfs::mount("24m", TEST) else {
        return;
    };
    let logs = tempfile::tempdir().unwrap();
    let ballast: PathBuf = disk.path().join("ballast");
    let filler: PathBuf = disk.path().join("filler");
    write_file(&ballast, free_bytes(disk.path()) as usize - FILL_ROOM);
    let url = format!(
        "sqlite://{}?mode=rwc",
        disk.path().join("readiness.db").display()
    );
    let server = Arc::new(ServeProcess::start(&url, &logs.path().join("first.log")).await);
    let observed = Arc::new(Mutex::new(Observed::default()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    for _ in 0..3 {
        // Fill: first with deliveries, then whatever is left with a file, so that even a tiny
        // write fails.
        let free_at_start = free_bytes(disk.path());
        fill_until_writes_fail(&server, &observed).await;
        write_file(&filler, usize::MAX);
        let readyz_503 = time_until(RECOVERY, || async { server.readyz().await == 503 })
            .await
            .is_some();
        let not_serving = time_until(RECOVERY, || async {
            server.health().await == Some(ServingStatus::NotServing)
        })
        .await
        .is_some();
        let listed_while_full = server.users_listed().await;
        let small_while_full = send(&client, &server, small_delivery(), &observed).await;

        // Free space, and watch the probes come back without any delivery to help them.
        std::fs::remove_file(&filler).unwrap();
        std::fs::remove_file(&ballast).unwrap();
        let freed = Instant::now();
        let ready_after = time_until(RECOVERY * 3, || async { server.readyz().await == 200 })
            .await
            .map(|_| freed.elapsed());
        let serving_after = time_until(RECOVERY * 3, || async {
            server.health().await == Some(ServingStatus::Serving)
        })
        .await
        .map(|_| freed.elapsed());
        let mut small_after = Vec::new();
        for _ in 0..20 {
            small_after.push(send(&client, &server, small_delivery(), &observed).await);
        }
        {
            let mut observed = observed.lock().await;
            let cycle = observed.cycles.last_mut().unwrap();
            cycle.free_at_start = free_at_start;
            cycle.readyz_503_while_full = readyz_503;
            cycle.health_not_serving_while_full = not_serving;
            cycle.listed_while_full = Some(listed_while_full);
            cycle.small_while_full = small_while_full;
            cycle.ready_after = ready_after;
            cycle.serving_after = serving_after;
            cycle.small_after = small_after;
        }
        // Space to free in the next cycle.
        write_file(
            &ballast,
            (free_bytes(disk.path()) as usize).saturating_sub(FILL_ROOM),
        );
    }

    let server = Arc::try_unwrap(server).ok().expect("senders are done");
    let mut messages: BTreeMap<String, usize> = BTreeMap::new();
    for line in server.log_lines() {
        if line["level"] != "INFO" {
            let text = format!(
                "{} {} {}",
                line["level"].as_str().unwrap_or("-"),
                line["fields"]["message"].as_str().unwrap_or("-"),
                line["fields"]["error"].as_str().unwrap_or("")
            );
            *messages.entry(text).or_default() += 1;
        }
    }
    let first_exit = server.terminate();
    std::fs::remove_file(&ballast).ok();
    let server = ServeProcess::start(&url, &logs.path().join("second.log")).await;
    let after_restart = send(&client, &server, small_delivery(), &observed).await;
    let second_exit = server.terminate();

    let observed = Arc::try_unwrap(observed).unwrap().into_inner();
    let db = Database::connect(&url).await.unwrap();
    let stored: BTreeMap<String, i64> = delivery::Entity::find()
        .all(&db)
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.body_sha256, row.id))
        .collect();
    let mut reports: BTreeMap<String, usize> = BTreeMap::new();
    for row in report::Entity::find().all(&db).await.unwrap() {
        *reports.entry(row.argyle_report_id.unwrap()).or_default() += 1;
    }
    db.close().await.ok();
    let lost: Vec<&Acknowledged> = observed
        .acknowledged
        .iter()
        .filter(|ack| !stored.contains_key(&ack.sha))
        .collect();
    let not_once: Vec<(&str, usize)> = observed
        .acknowledged
        .iter()
        .map(|ack| {
            let count = reports.get(&ack.report_id).copied().unwrap_or(0);
            (ack.report_id.as_str(), count)
        })
        .filter(|(_, count)| *count != 1)
        .collect();
    eprintln!(
        "{TEST}: {} acknowledged, {} lost, {} not applied exactly once",
        observed.acknowledged.len(),
        lost.len(),
        not_once.len(),
    );
    for cycle in &observed.cycles {
        eprintln!("{TEST}: {cycle:?}");
    }
    for (message, count) in &messages {
        eprintln!("{TEST}: log: {count} × {message}");
    }

    assert!(
        lost.is_empty(),
        "{} of {} acknowledged deliveries are missing after the restart",
        lost.len(),
        observed.acknowledged.len()
    );
    assert!(
        not_once.is_empty(),
        "acknowledged reports not applied exactly once: {not_once:?}"
    );
    assert!(
        observed.unexpected.is_empty(),
        "only 200 or 503: {:?}",
        observed.unexpected
    );
    for (number, cycle) in observed.cycles.iter().enumerate() {
        let cycle_number = number + 1;
        assert!(
            cycle.refused_while_filling > 0,
            "cycle {cycle_number}: writes failed"
        );
        assert!(
            cycle.readyz_503_while_full,
            "cycle {cycle_number}: /readyz said 503 while writes failed"
        );
        assert!(
            cycle.health_not_serving_while_full,
            "cycle {cycle_number}: gRPC health said NOT_SERVING while writes failed"
        );
        assert!(
            matches!(cycle.listed_while_full, Some(Ok(users)) if users > 0),
            "cycle {cycle_number}: queries answered while writes failed ({:?})",
            cycle.listed_while_full
        );
        assert!(
            cycle
                .ready_after
                .is_some_and(|after| after <= RECOVERY + MARGIN),
            "cycle {cycle_number}: /readyz 200 within {RECOVERY:?} of space returning ({:?})",
            cycle.ready_after
        );
        assert!(
            cycle
                .serving_after
                .is_some_and(|after| after <= RECOVERY + HEALTH_INTERVAL + MARGIN),
            "cycle {cycle_number}: gRPC health SERVING soon after space returned ({:?})",
            cycle.serving_after
        );
        assert!(
            cycle.small_after.iter().all(|status| *status == 200),
            "cycle {cycle_number}: every delivery 200 once space was back: {:?}",
            cycle.small_after
        );
    }
    assert!(
        observed.cycles.iter().any(|cycle| cycle.filled_with > 0),
        "some large deliveries were stored before the disk filled"
    );
    assert_eq!(after_restart, 200, "a delivery after the restart");
    assert!(first_exit.success(), "SIGTERM: clean exit ({first_exit})");
    assert!(second_exit.success(), "SIGTERM: clean exit ({second_exit})");
}
