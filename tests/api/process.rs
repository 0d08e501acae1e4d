//! `readiness serve` as a child process, for tests that need what an in-process app cannot give:
//! a real SIGTERM, a log of its own to read, a database on a filesystem the test mounts.
//! (`crash.rs` keeps its own `kill -9` variant.)

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use readiness::grpc::pb;
use readiness::grpc::pb::readiness_service_client::ReadinessServiceClient;

use crate::helpers::SECRET;

/// A running `readiness serve`, killed on drop if the test did not stop it.
pub struct ServeProcess {
    child: Child,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    log: PathBuf,
}

impl ServeProcess {
    /// Starts the service on `database_url` (both listeners on port 0), JSON logs to `log`, and
    /// waits until it has bound both ports and `/readyz` answers 200.
    pub async fn start(database_url: &str, log: &Path) -> Self {
        let log_file = std::fs::File::create(log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_readiness"))
            .args([
                "serve",
                "--http-addr",
                "127.0.0.1:0",
                "--grpc-addr",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--database-timeout-secs",
                "2",
            ])
            .env("READINESS_DATABASE_URL", database_url)
            .env("READINESS_ARGYLE_SECRETS", SECRET)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("readiness serve starts");
        let mut child = child;
        let mut bound = None;
        for _ in 0..600 {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "readiness serve exited with {status}: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            bound = serving_addresses(&std::fs::read_to_string(log).unwrap_or_default());
            if bound.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let Some((http, grpc)) = bound else {
            let _ = child.kill();
            panic!("readiness serve never logged its addresses");
        };
        let server = Self {
            child,
            http,
            grpc,
            log: log.to_owned(),
        };
        for _ in 0..300 {
            if server.readyz().await == 200 {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("readiness serve did not become ready");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// The status of `GET /readyz` (0 if the request failed).
    pub async fn readyz(&self) -> u16 {
        reqwest::Client::new()
            .get(self.url("/readyz"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_or(0, |response| response.status().as_u16())
    }

    /// A gRPC channel to the server (each call within 10 s), if it accepts one.
    async fn channel(&self) -> Option<tonic::transport::Channel> {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.grpc))
            .ok()?
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .ok()
    }

    /// How many users a `ListUsers` call answers (its first page), or the status code it got.
    pub async fn users_listed(&self) -> Result<usize, tonic::Code> {
        let channel = self.channel().await.ok_or(tonic::Code::Unavailable)?;
        ReadinessServiceClient::new(channel)
            .list_users(pb::ListUsersRequest::default())
            .await
            .map(|answer| answer.into_inner().users.len())
            .map_err(|status| status.code())
    }

    /// What `grpc.health.v1.Health/Check` says for the whole server.
    pub async fn health(&self) -> Option<ServingStatus> {
        let answer = HealthClient::new(self.channel().await?)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .ok()?;
        Some(answer.into_inner().status())
    }

    /// Every JSON log line so far.
    pub fn log_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The addresses from the `serving` log line, once it is written.
fn serving_addresses(log: &str) -> Option<(SocketAddr, SocketAddr)> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["fields"]["message"] == "serving")
        .and_then(|line| {
            let fields = &line["fields"];
            Some((
                fields["http"].as_str()?.parse().ok()?,
                fields["grpc"].as_str()?.parse().ok()?,
            ))
        })
}
