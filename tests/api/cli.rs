//! The binary's commands as a user runs them: configuration precedence, `sign`, and a clean exit
//! on SIGTERM.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use readiness::domain::signature::{Secret, sign};

const BIN: &str = env!("CARGO_BIN_EXE_readiness");
const SETTINGS_VARS: [&str; 29] = [
    "READINESS_CONFIG",
    "READINESS_DATABASE_URL",
    "READINESS_HTTP_ADDR",
    "READINESS_GRPC_ADDR",
    "READINESS_ARGYLE_SECRETS",
    "READINESS_MAX_BODY_BYTES",
    "READINESS_DATABASE_MAX_CONNECTIONS",
    "READINESS_DATABASE_TIMEOUT_SECS",
    "READINESS_SHUTDOWN_GRACE_SECS",
    "READINESS_STREAM_HEARTBEAT_MS",
    "READINESS_STREAM_POLL_MS",
    "READINESS_STREAM_BROADCAST_CAPACITY",
    "READINESS_GRPC_TOKEN_SHA256",
    "READINESS_GRPC_TOKEN_FILE",
    "READINESS_GRPC_OPEN_HEALTH",
    "READINESS_GRPC_OPEN_REFLECTION",
    "READINESS_GRPC_ADMIN_ENABLED",
    "READINESS_GRPC_ADMIN_TOKEN_SHA256",
    "READINESS_GRPC_TLS_CERT",
    "READINESS_GRPC_TLS_KEY",
    "READINESS_GRPC_TLS_CLIENT_CA",
    "READINESS_GRPC_MAX_MESSAGE_BYTES",
    "READINESS_GRPC_MAX_CONCURRENT_STREAMS",
    "READINESS_HTTP_ALLOWED_CIDRS",
    "READINESS_HTTP_CLIENT_IP_HEADER",
    "READINESS_HTTP_TRUSTED_PROXIES",
    "READINESS_HTTP_REQUEST_TIMEOUT_SECS",
    "READINESS_HTTP_MAX_IN_FLIGHT",
    "READINESS_LOG_FORMAT",
];

fn command() -> Command {
    let mut command = Command::new(BIN);
    for var in SETTINGS_VARS {
        command.env_remove(var);
    }
    command
}

#[test]
fn flags_override_the_environment_which_overrides_the_toml_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("readiness.toml");
    std::fs::write(
        &file,
        "http_addr = \"127.0.0.1:1111\"\ngrpc_addr = \"127.0.0.1:2222\"\nmax_body_bytes = 3333\nargyle_secrets = [\"from-file\"]\n",
    )
    .unwrap();

    let output = command()
        .args(["config", "--config"])
        .arg(&file)
        .args(["--http-addr", "127.0.0.1:9999"])
        .env("READINESS_HTTP_ADDR", "127.0.0.1:8888")
        .env("READINESS_GRPC_ADDR", "127.0.0.1:7777")
        .env("READINESS_ARGYLE_SECRETS", "first-secret, second-secret")
        .env(
            "READINESS_DATABASE_URL",
            "postgres://app:pa55word@db/readiness",
        )
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let settings: serde_json::Value = serde_json::from_str(&stdout).unwrap();

    assert_eq!(
        settings["http_addr"], "127.0.0.1:9999",
        "flag beats environment"
    );
    assert_eq!(
        settings["grpc_addr"], "127.0.0.1:7777",
        "environment beats file"
    );
    assert_eq!(settings["max_body_bytes"], 3333, "file beats default");
    assert_eq!(settings["database_max_connections"], 10, "default");
    assert_eq!(settings["argyle_secrets"].as_array().unwrap().len(), 2);
    for secret in ["first-secret", "second-secret", "from-file", "pa55word"] {
        assert!(!stdout.contains(secret), "{secret} leaked: {stdout}");
    }
}

#[test]
fn serve_refuses_to_start_without_a_webhook_secret() {
    let output = command().args(["config"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("READINESS_ARGYLE_SECRETS"), "{stderr}");
}

#[test]
fn sign_prints_the_signature_argyle_would_send() {
    let body = br#"{"event":"accounts.connected","data":{}}"#;
    let expected = sign(&Secret::new("s3cret"), body);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.json");
    std::fs::write(&file, body).unwrap();
    let from_file = command()
        .args(["sign", "--secret", "s3cret"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(from_file.stdout).unwrap().trim(),
        expected
    );

    let mut child = command()
        .args(["sign"])
        .env("READINESS_ARGYLE_SECRETS", "s3cret,other")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body).unwrap();
    let from_stdin = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8(from_stdin.stdout).unwrap().trim(),
        expected
    );
}

#[test]
fn serve_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = command()
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .env("READINESS_ARGYLE_SECRETS", "s")
        .env(
            "READINESS_DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display()),
        )
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("serving") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "server exited before serving"
        );
    }

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(rest.contains("stopped"), "{rest}");
}

#[test]
fn the_readme_configuration_table_lists_every_setting_with_its_flag_and_variable() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("## Configuration")
        .nth(1)
        .expect("a Configuration section");
    let section = section.split("\n## ").next().unwrap();
    let rows: Vec<Vec<String>> = section
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            line.split('|')
                .map(|cell| cell.trim().trim_matches('`').to_owned())
                .collect()
        })
        .collect();
    let documented: std::collections::BTreeSet<_> = rows.iter().map(|row| row[1].clone()).collect();

    let output = command()
        .args(["config"])
        .env("READINESS_ARGYLE_SECRETS", "s")
        .output()
        .unwrap();
    let settings: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let actual: std::collections::BTreeSet<_> =
        settings.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        documented, actual,
        "README table keys vs. the settings the code reads"
    );

    let help =
        String::from_utf8(command().args(["serve", "--help"]).output().unwrap().stdout).unwrap();
    for row in &rows {
        let (key, flag, variable) = (&row[1], &row[2], &row[3]);
        assert_eq!(
            flag,
            &format!("--{}", key.replace('_', "-")),
            "flag of {key}"
        );
        assert!(
            help.contains(flag.as_str()),
            "{flag} missing from serve --help"
        );
        assert_eq!(
            variable,
            &format!("READINESS_{}", key.to_uppercase()),
            "variable of {key}"
        );
        assert!(
            help.contains(variable.as_str()),
            "{variable} missing from serve --help"
        );
    }
}
