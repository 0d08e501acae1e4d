//! Traces reach an OpenTelemetry collector: an in-test OTLP/gRPC receiver (a tonic server
//! implementing the OTLP trace service) gets the spans of a webhook, child of the sender's W3C
//! `traceparent`, down to the event append, and of a gRPC call.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use readiness::domain::signature::{Secret, sign};
use readiness::grpc::pb;

use crate::helpers::process::{ServeProcess, post_signed, serve_command};
use crate::helpers::{SECRET, body, new_id};

/// Long enough for anything that should happen; only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(30);

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| attribute.value.as_ref()?.value.clone())
                .map(|value| match value {
                    Value::StringValue(name) => name,
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|span| (service.clone(), span)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// An OTLP/gRPC collector on a free loopback port: what it receives, its address, its task.
async fn start_collector() -> (
    Receiver,
    std::net::SocketAddr,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
) {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (receiver, collector, server)
}

#[tokio::test]
async fn the_traces_endpoint_alone_turns_export_on_and_otel_sdk_disabled_turns_it_off() {
    for (variables, exported) in [
        (&["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"][..], true),
        (
            &["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SDK_DISABLED"][..],
            false,
        ),
    ] {
        let (receiver, collector, collector_server) = start_collector().await;
        let dir = tempfile::tempdir().unwrap();
        let database = format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display());
        let mut command = serve_command(0, 0);
        command
            .env("READINESS_ARGYLE_SECRETS", SECRET)
            .env("READINESS_DATABASE_URL", database)
            .env("RUST_LOG", "info");
        for variable in variables {
            let value = match *variable {
                "OTEL_SDK_DISABLED" => "true".to_owned(),
                _ => format!("http://{collector}"),
            };
            command.env(variable, value);
        }
        let mut server = tokio::task::spawn_blocking(move || ServeProcess::start(&mut command))
            .await
            .unwrap();
        let response = post_signed(server.http, body::connected(&new_id(), &new_id())).await;
        assert_eq!(response.status(), 200);
        // Shutdown flushes the exporter, if there is one.
        server.terminate();
        let logs = server.logs();
        let status = tokio::task::spawn_blocking(move || server.wait_for_exit(PATIENCE))
            .await
            .unwrap();
        assert!(status.success());
        collector_server.abort();

        let spans = receiver.spans.lock().unwrap().len();
        assert_eq!(spans > 0, exported, "{variables:?}: {spans} spans");
        assert_eq!(
            logs.contains("exporting traces over OTLP"),
            exported,
            "{variables:?}: {logs}"
        );
    }
}

#[tokio::test]
async fn spans_are_exported_over_otlp_as_children_of_the_callers_traceparent() {
    let (receiver, collector, collector_server) = start_collector().await;

    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display());
    // Started off the runtime, which keeps serving the collector meanwhile.
    let mut server = tokio::task::spawn_blocking(move || {
        ServeProcess::start(
            serve_command(0, 0)
                .env("READINESS_ARGYLE_SECRETS", SECRET)
                .env("READINESS_DATABASE_URL", database)
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}"))
                .env("OTEL_SERVICE_NAME", "readiness-under-test")
                .env("RUST_LOG", "info"),
        )
    })
    .await
    .unwrap();
    let (http, grpc) = (server.http, server.grpc);
    let client = reqwest::Client::new();

    let (trace_id, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let delivery = body::connected(&new_id(), &new_id());
    let response = client
        .post(format!("http://{http}/webhooks/argyle"))
        .header("content-type", "application/json")
        .header(
            "x-argyle-signature",
            sign(&Secret::new(SECRET), delivery.as_bytes()),
        )
        .header("traceparent", &traceparent)
        .body(delivery)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let grpc_trace = "0af7651916cd43dd8448eb211c80319c";
    let mut request = tonic::Request::new(pb::ListUsersRequest::default());
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{grpc_trace}-b7ad6b7169203331-01")
            .parse()
            .unwrap(),
    );
    let mut readiness =
        pb::readiness_service_client::ReadinessServiceClient::connect(format!("http://{grpc}"))
            .await
            .unwrap();
    readiness.list_users(request).await.unwrap();

    // Shutdown flushes the exporter.
    server.terminate();
    let status = tokio::task::spawn_blocking(move || server.wait_for_exit(PATIENCE))
        .await
        .unwrap();
    assert!(status.success());
    collector_server.abort();

    let spans = receiver.spans.lock().unwrap().clone();
    let in_trace = |trace: &str| -> Vec<&Span> {
        spans
            .iter()
            .map(|(_, span)| span)
            .filter(|span| hex::encode(&span.trace_id) == trace)
            .collect()
    };
    let webhook = in_trace(trace_id);
    let named = |name: &str| -> &Span {
        webhook
            .iter()
            .find(|span| span.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "no {name} span in {:?}",
                    webhook.iter().map(|s| &s.name).collect::<Vec<_>>()
                )
            })
    };
    let (request_span, ingest, apply, commit, append) = (
        named("http_request"),
        named("ingest"),
        named("apply"),
        named("commit"),
        named("append_events"),
    );
    assert_eq!(
        hex::encode(&request_span.parent_span_id),
        caller_span,
        "the caller's span is the parent"
    );
    assert_eq!(ingest.parent_span_id, request_span.span_id);
    assert_eq!(apply.parent_span_id, ingest.span_id);
    assert_eq!(
        commit.parent_span_id, ingest.span_id,
        "the group commit that stored this delivery is traced under its request"
    );
    assert_eq!(append.parent_span_id, commit.span_id);
    assert_eq!(
        named("verify_signature").parent_span_id,
        request_span.span_id
    );
    assert!(
        spans
            .iter()
            .all(|(service, _)| service == "readiness-under-test")
    );

    let grpc_spans = in_trace(grpc_trace);
    assert!(
        grpc_spans.iter().any(|span| span.name == "grpc_request"),
        "{grpc_spans:?}"
    );
}
