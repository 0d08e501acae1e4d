//! `deploy/k8s/` against the service: no cluster runs here, so these tests check what can be
//! checked without one. The manifests parse; every environment variable they set is a setting
//! the binary reads and accepts; ports, probes and selectors agree with each other, with the
//! configured addresses and with the image; and the probes ask a running service for paths and
//! health it serves.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::TestApp;

const BIN: &str = env!("CARGO_BIN_EXE_readiness");

/// Variables the manifests may set that are not `READINESS_*` settings.
const OTHER_VARIABLES: [&str; 1] = ["RUST_LOG"];

fn k8s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/k8s")
}

/// Every YAML document under `deploy/k8s/`, with the file it came from.
fn documents() -> Vec<(String, Value)> {
    let mut files: Vec<_> = std::fs::read_dir(k8s_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", k8s_dir().display());
    let mut documents = Vec::new();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_norway::Deserializer::from_str(&text) {
            let value = Value::deserialize(document)
                .unwrap_or_else(|error| panic!("{name} does not parse: {error}"));
            documents.push((name.clone(), value));
        }
    }
    documents
}

/// The one document of this kind (and name, when given).
fn find(documents: &[(String, Value)], kind: &str, name: Option<&str>) -> Value {
    let found: Vec<_> = documents
        .iter()
        .filter(|(_, doc)| doc["kind"] == kind)
        .filter(|(_, doc)| name.is_none_or(|name| doc["metadata"]["name"] == name))
        .map(|(_, doc)| doc.clone())
        .collect();
    assert_eq!(found.len(), 1, "one {kind} {name:?} expected");
    found.into_iter().next().unwrap()
}

fn container(deployment: &Value) -> &Value {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1, "one container");
    &containers[0]
}

fn container_port(container: &Value, name: &str) -> u16 {
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|port| port["name"] == name)
        .unwrap_or_else(|| panic!("no containerPort named {name}"))["containerPort"]
        .as_u64()
        .unwrap() as u16
}

/// A probe's or Service's port (a number or a containerPort name) as a number.
fn resolve_port(container: &Value, port: &Value) -> u16 {
    match port {
        Value::String(name) => container_port(container, name),
        Value::Number(number) => number.as_u64().unwrap() as u16,
        other => panic!("unexpected port {other}"),
    }
}

/// The environment the container gets: the ConfigMap's data, then `env` (which wins), with
/// Secret references given a placeholder value.
fn environment(documents: &[(String, Value)]) -> Vec<(String, String)> {
    let deployment = find(documents, "Deployment", Some("readiness"));
    let container = container(&deployment);
    let mut variables = Vec::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let name = source["configMapRef"]["name"]
            .as_str()
            .expect("envFrom names ConfigMaps only");
        let config_map = find(documents, "ConfigMap", Some(name));
        for (key, value) in config_map["data"].as_object().unwrap() {
            variables.push((key.clone(), value.as_str().unwrap().to_owned()));
        }
    }
    for variable in container["env"].as_array().into_iter().flatten() {
        let name = variable["name"].as_str().unwrap().to_owned();
        let value = match (&variable["value"], &variable["valueFrom"]["secretKeyRef"]) {
            (Value::String(value), _) => value.clone(),
            (_, Value::Object(_)) if name.ends_with("DATABASE_URL") => {
                "postgres://readiness@postgres/readiness".to_owned()
            }
            (_, Value::Object(_)) => format!("from-the-secret-{}", name.to_lowercase()),
            other => panic!("{name}: unexpected source {other:?}"),
        };
        variables.retain(|(existing, _)| existing != &name);
        variables.push((name, value));
    }
    variables
}

/// `readiness config` run with exactly these `READINESS_*` variables.
fn effective_settings(variables: &[(String, String)]) -> Value {
    let mut command = Command::new(BIN);
    command.arg("config");
    for (name, _) in std::env::vars() {
        if name.starts_with("READINESS_") {
            command.env_remove(name);
        }
    }
    command.envs(variables.iter().map(|(k, v)| (k, v)));
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "readiness config refused the manifests' environment: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn address(variables: &[(String, String)], name: &str) -> SocketAddr {
    let value = &variables
        .iter()
        .find(|(key, _)| key == name)
        .unwrap_or_else(|| panic!("{name} is not set"))
        .1;
    value.parse().unwrap()
}

#[test]
fn the_kubernetes_manifests_parse_and_the_kustomization_lists_every_one() {
    let documents = documents();
    for (file, doc) in &documents {
        for field in ["apiVersion", "kind"] {
            assert!(doc[field].is_string(), "{file}: no {field}");
        }
    }
    let kustomization = find(&documents, "Kustomization", None);
    let listed: BTreeSet<_> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|resource| resource.as_str().unwrap().to_owned())
        .collect();
    let files: BTreeSet<_> = documents
        .iter()
        .filter(|(_, doc)| doc["kind"] != "Kustomization")
        .map(|(file, _)| file.clone())
        .collect();
    assert_eq!(listed, files, "kustomization.yaml resources vs. the files");
    for (_, doc) in documents
        .iter()
        .filter(|(_, d)| d["kind"] != "Kustomization")
    {
        assert!(
            doc["metadata"]["name"].is_string(),
            "every resource has a name"
        );
    }
    let image = container(&find(&documents, "Deployment", None))["image"]
        .as_str()
        .unwrap()
        .to_owned();
    let image_name = image.split(':').next().unwrap();
    assert_eq!(
        kustomization["images"][0]["name"], image_name,
        "the kustomization's image override names the Deployment's image"
    );
}

#[test]
fn every_variable_the_manifests_set_is_a_setting_the_service_reads_and_accepts() {
    let documents = documents();
    let variables = environment(&documents);
    let defaults = effective_settings(&[("READINESS_ARGYLE_SECRETS".into(), "s".into())]);
    let settings: BTreeSet<String> = defaults
        .as_object()
        .unwrap()
        .keys()
        .map(|key| format!("READINESS_{}", key.to_uppercase()))
        .collect();

    for (name, _) in &variables {
        assert!(
            settings.contains(name) || OTHER_VARIABLES.contains(&name.as_str()),
            "{name} is set by deploy/k8s but is not a setting (settings: {settings:?})"
        );
    }
    for required in ["READINESS_DATABASE_URL", "READINESS_ARGYLE_SECRETS"] {
        assert!(
            variables.iter().any(|(name, _)| name == required),
            "{required} must be set"
        );
    }

    // The service reads each value as given (a misspelt name would leave the default).
    let effective = effective_settings(&variables);
    for (name, value) in &variables {
        let Some(key) = name.strip_prefix("READINESS_") else {
            continue;
        };
        let key = key.to_lowercase();
        if name == "READINESS_ARGYLE_SECRETS" {
            continue; // printed redacted
        }
        let read = match &effective[&key] {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        assert_eq!(&read, value, "{name} as the service reads it");
    }
}

#[test]
fn ports_probes_and_selectors_agree_with_the_configured_addresses_and_the_image() {
    let documents = documents();
    let variables = environment(&documents);
    let deployment = find(&documents, "Deployment", Some("readiness"));
    let container = container(&deployment);
    let pod = &deployment["spec"]["template"];

    // The listeners are on all interfaces (the kubelet and the Service connect from outside the
    // pod) and on the declared containerPorts.
    for (variable, port_name) in [
        ("READINESS_HTTP_ADDR", "http"),
        ("READINESS_GRPC_ADDR", "grpc"),
    ] {
        let addr = address(&variables, variable);
        assert!(
            addr.ip().is_unspecified(),
            "{variable} = {addr}: not reachable from outside the pod"
        );
        assert_eq!(
            addr.port(),
            container_port(container, port_name),
            "{variable} vs. containerPort {port_name}"
        );
    }

    // Probes point at those ports.
    let http = container_port(container, "http");
    let grpc = container_port(container, "grpc");
    for probe in ["readinessProbe", "livenessProbe"] {
        let port = resolve_port(container, &container[probe]["httpGet"]["port"]);
        assert_eq!(port, http, "{probe} port");
    }
    assert_eq!(
        resolve_port(container, &container["startupProbe"]["grpc"]["port"]),
        grpc,
        "startupProbe (gRPC health) port"
    );

    // The Services reach those ports; the gRPC one is marked HTTP/2 without TLS.
    let labels = &pod["metadata"]["labels"];
    let services: Vec<_> = documents
        .iter()
        .filter(|(_, doc)| doc["kind"] == "Service")
        .map(|(_, doc)| doc)
        .collect();
    assert!(!services.is_empty());
    for service in services {
        let name = &service["metadata"]["name"];
        for (key, value) in service["spec"]["selector"].as_object().unwrap() {
            assert_eq!(&labels[key], value, "Service {name} selects the pods");
        }
        for port in service["spec"]["ports"].as_array().unwrap() {
            let target = resolve_port(container, &port["targetPort"]);
            assert!(target == http || target == grpc, "Service {name}: {port}");
            if target == grpc {
                assert_eq!(port["name"], "grpc", "Service {name}: gRPC port name");
                assert_eq!(
                    port["appProtocol"], "kubernetes.io/h2c",
                    "Service {name}: appProtocol"
                );
            }
        }
    }
    let budget = find(&documents, "PodDisruptionBudget", None);
    for (key, value) in budget["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &labels[key], value,
            "the PodDisruptionBudget selects the pods"
        );
    }
    assert_eq!(
        budget["spec"]["maxUnavailable"], 1,
        "drains evict one replica at a time"
    );
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);

    // Non-root as the image's own user; requests and limits set.
    let security = &pod["spec"]["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap();
    let user = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix("USER "))
        .expect("the Dockerfile sets USER");
    assert_eq!(
        user.trim(),
        format!("{}:{}", security["runAsUser"], security["runAsGroup"]),
        "runAsUser:runAsGroup vs. the image's USER"
    );
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                container["resources"][kind][resource].is_string(),
                "resources.{kind}.{resource}"
            );
        }
    }

    // Shutdown fits in the grace period: the preStop pause, then the service's own drain.
    let grace: u64 = variables
        .iter()
        .find(|(name, _)| name == "READINESS_SHUTDOWN_GRACE_SECS")
        .map_or(10, |(_, value)| value.parse().unwrap());
    let pause: u64 = container["lifecycle"]["preStop"]["exec"]["command"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let period = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        pause + grace < period,
        "preStop {pause} s + drain {grace} s within {period} s"
    );
}

#[tokio::test]
async fn the_probes_ask_for_paths_and_health_the_service_serves() {
    let documents = documents();
    let deployment = find(&documents, "Deployment", Some("readiness"));
    let container = container(&deployment).clone();
    let app = TestApp::spawn().await;

    for probe in ["readinessProbe", "livenessProbe"] {
        let path = container[probe]["httpGet"]["path"].as_str().unwrap();
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{probe} GET {path}");
    }
    // Liveness asks the path that stays 200 while the database is down (faults.rs), readiness
    // the one that does not: an outage takes pods out of the Service without restarting them.
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let service = container["startupProbe"]["grpc"]["service"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut health = HealthClient::new(app.channel().await);
    let answer = health
        .check(HealthCheckRequest {
            service: service.clone(),
        })
        .await
        .unwrap_or_else(|status| panic!("gRPC health of {service:?}: {status}"))
        .into_inner();
    assert_eq!(answer.status(), ServingStatus::Serving, "{service:?}");
    app.stop().await;
}
