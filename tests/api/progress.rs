//! Progress of the long commands: `inbox replay --failed`, `inbox prune`, `simulate` and
//! `readiness-bench seed` draw a bar on standard error when it is a terminal (here a real
//! pseudo-terminal), and write nothing there when it is not; either way their standard output
//! is the same JSON.

use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use readiness::store::entities::delivery;
use sea_orm::{ActiveValue::Set, EntityTrait};
use serde_json::Value;

use crate::helpers::process::{ChildProcess, readiness};
use crate::helpers::{SECRET, TestApp, body, new_id, sha};

/// Long enough for a debug build on a loaded machine; only reached when something hangs.
const PATIENCE: Duration = Duration::from_secs(120);

/// What a command left: its exit status, its standard output, and its standard error.
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `command` with standard output piped (as when redirected to a file) and standard error
/// on a new pseudo-terminal (`on_terminal`) or piped too; `stderr` is what was written there.
fn run(mut command: Command, on_terminal: bool) -> Ran {
    use rustix::fs::{Mode, OFlags};
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};

    command
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut terminal = None;
    if on_terminal {
        // Close-on-exec everywhere: only this child may hold the terminal, or reading it would
        // not end when the child exits.
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
            .expect("a pseudo-terminal");
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        let flags = OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC;
        let secondary = rustix::fs::open(name.as_c_str(), flags, Mode::empty()).unwrap();
        command.stderr(Stdio::from(secondary));
        terminal = Some(std::fs::File::from(master));
    } else {
        command.stderr(Stdio::piped());
    }
    let mut child = ChildProcess::spawn(&mut command);
    drop(command); // its copy of the terminal: the reader below ends when the child's closes
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            // A terminal whose other side is closed answers EIO: the bytes read are kept.
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = drain(Box::new(child.0.stdout.take().unwrap()));
    let stderr = match terminal {
        Some(terminal) => drain(Box::new(terminal)),
        None => drain(Box::new(child.0.stderr.take().unwrap())),
    };
    let status = child.wait_for_exit(PATIENCE);
    Ran {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn inbox(app: &TestApp, args: &[&str]) -> Command {
    let mut command = readiness();
    command
        .arg("inbox")
        .args(args)
        .env("READINESS_DATABASE_URL", app.database_url());
    command
}

fn simulate(app: &TestApp) -> Command {
    let mut command = readiness();
    command.args(["simulate", "--target", &format!("http://{}", app.http)]);
    command.args(["--users", "5", "--concurrency", "2", "--secret", SECRET]);
    command
}

fn seed(dir: &Path) -> Command {
    let url = format!("sqlite://{}?mode=rwc", dir.join("seed.db").display());
    let mut command = Command::new(env!("CARGO_BIN_EXE_readiness-bench"));
    command.args([
        "seed",
        "--database-url",
        &url,
        "--to",
        "1200",
        "--events",
        "30",
    ]);
    command
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .collect()
}

/// Two rejected deliveries: one that still cannot apply, one an older version could not.
async fn two_rejected_deliveries(app: &TestApp) {
    let (owner, intruder, account) = (new_id(), new_id(), new_id());
    app.deliver_ok(&body::connected(&owner, &account)).await;
    let stolen = body::ready(&intruder, &[(&account, "2024-01-08T12:00:00Z")]);
    assert_eq!(app.deliver(&stolen).await.0, 400);
    let raw = body::generated(&new_id(), "voie", Some(&new_id()));
    delivery::Entity::insert(delivery::ActiveModel {
        body_sha256: Set(sha(&raw)),
        body: Set(raw.into_bytes()),
        status: Set("rejected".into()),
        error: Set(Some("recorded by an older version".into())),
        received_at: Set(chrono::Utc::now()),
        ..Default::default()
    })
    .exec(app.core.db())
    .await
    .unwrap();
}

/// Runs a command off the test's runtime (the service under test keeps serving).
async fn run_blocking(command: Command, on_terminal: bool) -> Ran {
    tokio::task::spawn_blocking(move || run(command, on_terminal))
        .await
        .unwrap()
}

#[tokio::test]
async fn inbox_replay_and_prune_show_progress_on_a_terminal_and_keep_their_json_lines() {
    let app = TestApp::spawn().await;
    two_rejected_deliveries(&app).await;

    let replay = run_blocking(inbox(&app, &["replay", "--failed"]), true).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let prune = run_blocking(inbox(&app, &["prune", "--older-than", "1ms"]), true).await;

    assert!(replay.status.success(), "{}", replay.stderr);
    let replayed = json_lines(&replay.stdout);
    assert_eq!(replayed.len(), 2, "{}", replay.stdout);
    assert!(
        replayed
            .iter()
            .all(|line| line["replay"]["result"].is_string())
    );
    assert!(
        replay.stderr.contains("replaying failed deliveries") && replay.stderr.contains("2/2"),
        "no progress on the terminal: {:?}",
        replay.stderr
    );
    assert!(prune.status.success(), "{}", prune.stderr);
    assert_eq!(
        json_lines(&prune.stdout)[0]["deleted"],
        3,
        "{}",
        prune.stdout
    );
    assert!(
        prune.stderr.contains("pruning deliveries") && prune.stderr.contains("3/3"),
        "no progress on the terminal: {:?}",
        prune.stderr
    );
    app.stop().await;
}

#[tokio::test]
async fn simulate_and_seed_show_progress_on_a_terminal_and_keep_their_json_summary() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();

    let simulated = run_blocking(simulate(&app), true).await;
    let seeded = run_blocking(seed(dir.path()), true).await;

    assert!(simulated.status.success(), "{}", simulated.stderr);
    let summary: Value = serde_json::from_str(&simulated.stdout).unwrap();
    let deliveries = summary["deliveries"].as_u64().unwrap();
    assert_eq!(summary["statuses"]["200"], deliveries, "{summary}");
    assert!(
        simulated.stderr.contains("sending deliveries")
            && simulated
                .stderr
                .contains(&format!("{deliveries}/{deliveries}")),
        "no progress on the terminal: {:?}",
        simulated.stderr
    );
    assert!(seeded.status.success(), "{}", seeded.stderr);
    let summary: Value = serde_json::from_str(&seeded.stdout).unwrap();
    assert_eq!(summary["users_written"], 1200, "{summary}");
    assert_eq!(summary["events_written"], 30, "{summary}");
    for shown in ["seeding users", "1200/1200", "appending events", "30/30"] {
        assert!(
            seeded.stderr.contains(shown),
            "no {shown:?} on the terminal: {:?}",
            seeded.stderr
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn long_commands_write_nothing_to_stderr_when_it_is_not_a_terminal() {
    let app = TestApp::spawn().await;
    two_rejected_deliveries(&app).await;
    let dir = tempfile::tempdir().unwrap();

    let replay = run_blocking(inbox(&app, &["replay", "--failed"]), false).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let prune = run_blocking(inbox(&app, &["prune", "--older-than", "1ms"]), false).await;
    let simulated = run_blocking(simulate(&app), false).await;
    let seeded = run_blocking(seed(dir.path()), false).await;

    for (name, ran) in [
        ("inbox replay --failed", &replay),
        ("inbox prune", &prune),
        ("simulate", &simulated),
        ("readiness-bench seed", &seeded),
    ] {
        assert!(ran.status.success(), "{name}: {}", ran.stderr);
        assert_eq!(ran.stderr, "", "{name} wrote to a non-terminal stderr");
    }
    assert_eq!(json_lines(&replay.stdout).len(), 2, "{}", replay.stdout);
    assert_eq!(
        json_lines(&prune.stdout)[0]["deleted"],
        3,
        "{}",
        prune.stdout
    );
    let summary: Value = serde_json::from_str(&simulated.stdout).unwrap();
    assert!(summary["deliveries"].as_u64().unwrap() >= 10, "{summary}");
    let summary: Value = serde_json::from_str(&seeded.stdout).unwrap();
    assert_eq!(summary["users_in_store"], 1200, "{summary}");
    app.stop().await;
}

#[tokio::test]
async fn prune_deletes_in_batches_and_reports_progress_after_each() {
    let app = TestApp::spawn().await;
    let now = chrono::Utc::now();
    let old = (0..2345).map(|n| {
        let raw = format!("{{\"old delivery\": {n}}}");
        delivery::ActiveModel {
            body_sha256: Set(sha(&raw)),
            body: Set(raw.into_bytes()),
            status: Set("rejected".into()),
            error: Set(Some("not JSON enough".into())),
            received_at: Set(now - chrono::Duration::days(2)),
            ..Default::default()
        }
    });
    delivery::Entity::insert_many(old.collect::<Vec<_>>())
        .exec_without_returning(app.core.db())
        .await
        .unwrap();
    app.deliver_ok(&body::connected(&new_id(), &new_id())).await;

    let mut reported = Vec::new();
    let deleted = app
        .core
        .inbox_prune(now - chrono::Duration::days(1), |deleted, total| {
            reported.push((deleted, total))
        })
        .await
        .unwrap();

    assert_eq!(deleted, 2345);
    assert_eq!(
        reported,
        [(0, 2345), (1000, 2345), (2000, 2345), (2345, 2345)]
    );
    let kept = app.deliveries().await;
    assert_eq!(kept.len(), 1, "the recent delivery stays");
    assert!(kept[0].received_at > now - chrono::Duration::days(1));
    app.stop().await;
}
