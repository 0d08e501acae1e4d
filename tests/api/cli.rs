//! The binary's commands as a user runs them: configuration precedence, `sign`, `hash-token`, a
//! refusal to serve without a secret, and a clean, prompt exit on SIGTERM, also while the start
//! still waits for its database.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use readiness::domain::signature::{Secret, sign};

use crate::helpers::process::{self, ChildProcess, ServeProcess};

/// Long enough for anything that should happen; only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(30);

fn command() -> Command {
    process::readiness()
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
        .env("READINESS_ARGYLE_API_KEY_ID", "argyle-key-id")
        .env("READINESS_ARGYLE_API_KEY_SECRET", "argyle-key-secret")
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
    assert_eq!(settings["argyle_api_key_id"], "<redacted>");
    assert_eq!(settings["argyle_api_key_secret"], "<redacted>");
    let secrets = [
        "first-secret",
        "second-secret",
        "from-file",
        "pa55word",
        "argyle-key-id",
        "argyle-key-secret",
    ];
    for secret in secrets {
        assert!(!stdout.contains(secret), "{secret} leaked: {stdout}");
    }

    // READINESS_CONFIG names the file as --config does.
    let output = command()
        .args(["config"])
        .env("READINESS_CONFIG", &file)
        .output()
        .unwrap();
    let settings: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!("{}", String::from_utf8_lossy(&output.stderr));
    });
    assert_eq!(settings["max_body_bytes"], 3333, "READINESS_CONFIG's file");
}

#[test]
fn serve_refuses_to_start_without_a_webhook_secret() {
    let dir = tempfile::tempdir().unwrap();
    let output = process::run(
        process::serve_command(0, 0).env(
            "READINESS_DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display()),
        ),
        PATIENCE,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("READINESS_ARGYLE_SECRETS"), "{stderr}");
    assert!(
        !stderr.contains("\"serving\""),
        "nothing was served: {stderr}"
    );
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

    let from_stdin = with_stdin(
        command()
            .args(["sign"])
            .env("READINESS_ARGYLE_SECRETS", "s3cret,other"),
        body,
    );
    assert_eq!(from_stdin.trim(), expected);
}

/// Runs `command` with `input` on its standard input; returns its standard output.
fn with_stdin(command: &mut Command, input: &[u8]) -> String {
    let mut child = ChildProcess::spawn(command.stdin(Stdio::piped()).stdout(Stdio::piped()));
    child.0.stdin.take().unwrap().write_all(input).unwrap();
    let mut output = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    assert!(child.wait_for_exit(PATIENCE).success());
    output
}

#[test]
fn hash_token_prints_the_sha256_that_grpc_token_sha256_expects() {
    let token = format!("token-{}", uuid::Uuid::new_v4());
    // SHA-256 of the token's bytes, in lower-case hex, computed independently of the service.
    let expected = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()));

    let bare = with_stdin(command().arg("hash-token"), token.as_bytes());
    assert_eq!(bare, format!("{expected}\n"));
    let from_echo = with_stdin(command().arg("hash-token"), format!("{token}\n").as_bytes());
    assert_eq!(
        from_echo.trim(),
        expected,
        "`echo` without -n gives the same hash"
    );
    assert_eq!(readiness::grpc::hash_token(&token), expected);
}

#[test]
fn serve_exits_cleanly_and_promptly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServeProcess::start(
        process::serve_command(0, 0)
            .args(["--shutdown-grace-secs", "10"])
            .env("READINESS_ARGYLE_SECRETS", "s")
            .env(
                "READINESS_DATABASE_URL",
                format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display()),
            )
            .env("RUST_LOG", "info"),
    );

    let started = Instant::now();
    server.terminate();
    let status = server.wait_for_exit(PATIENCE);
    let took = started.elapsed();

    let logs = server.logs();
    assert!(status.success(), "exit status {status}: {logs}");
    // Nothing was in flight: shutdown does not wait for the 10 s grace period.
    assert!(took < Duration::from_secs(3), "took {took:?}: {logs}");
    assert!(logs.contains("\"stopped\""), "{logs}");
}

#[test]
fn serve_stops_at_once_on_sigterm_while_it_waits_for_its_database() {
    let port = crate::helpers::free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let mut server = ChildProcess::spawn(
        process::serve_command(0, 0)
            .env("READINESS_ARGYLE_SECRETS", "s")
            .env(
                "READINESS_DATABASE_URL",
                format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            )
            .env("READINESS_DATABASE_STARTUP_WAIT_SECS", "60")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let waiting = Instant::now();
    while !logs().contains("the database cannot be reached yet") {
        assert!(
            waiting.elapsed() < PATIENCE,
            "never said it waits: {}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let started = Instant::now();
    server.terminate();
    let status = server.wait_for_exit(PATIENCE);
    let took = started.elapsed();

    assert!(status.success(), "exit status {status}: {}", logs());
    assert!(took < Duration::from_secs(3), "took {took:?}: {}", logs());
    assert!(
        logs().contains("stopped before the service was up"),
        "{}",
        logs()
    );
}

#[test]
fn the_readme_configuration_table_lists_every_setting_with_its_flag_variable_and_default() {
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

    // The defaults the README and `serve --help` state, where they state one value, are the
    // code's (`readiness config` with nothing set but the required secret). An empty list or an
    // unset value is described in words instead ("any", "a quarter of ...").
    let shown = |value: &serde_json::Value| match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let help_blocks: Vec<&str> = help.split("\n      --").collect();
    let mut wrong = Vec::new();
    for row in &rows {
        let (key, flag, default) = (&row[1], &row[2], &row[4]);
        let code = shown(&settings[key.as_str()]);
        if code == "[]" || code == "null" {
            continue;
        }
        let one_value = !default.contains(' ') && !default.starts_with("none");
        if one_value && default != &code {
            wrong.push(format!("README {key}: {default} (code: {code})"));
        }
        let flag = flag.trim_start_matches("--");
        let block = help_blocks
            .iter()
            .find(|block| block.starts_with(&format!("{flag} ")))
            .unwrap_or_else(|| panic!("--{flag} in serve --help"));
        if let Some(stated) = block.split("[default: ").nth(1) {
            let stated = stated.split(']').next().unwrap();
            if stated != code {
                wrong.push(format!("--help --{flag}: {stated} (code: {code})"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "defaults that differ:\n{}",
        wrong.join("\n")
    );
}
