//! Server reflection describes exactly what is served: AdminService (which can read raw webhook
//! bodies) appears only when `grpc_admin_enabled` is set.

use readiness::grpc::pb;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

use crate::helpers::TestApp;

const ADMIN: &str = "readiness.v1.AdminService";

/// One reflection question; tonic answers an unknown symbol with a NOT_FOUND status.
async fn ask(app: &TestApp, request: MessageRequest) -> Result<MessageResponse, tonic::Status> {
    let mut client = ServerReflectionClient::new(app.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer: ServerReflectionResponse = answers.message().await?.unwrap();
    Ok(answer.message_response.unwrap())
}

async fn listed_services(app: &TestApp) -> Vec<String> {
    match ask(app, MessageRequest::ListServices(String::new()))
        .await
        .unwrap()
    {
        MessageResponse::ListServicesResponse(list) => list
            .service
            .into_iter()
            .map(|service| service.name)
            .collect(),
        other => panic!("unexpected answer {other:?}"),
    }
}

async fn admin_is_described(app: &TestApp) -> bool {
    match ask(app, MessageRequest::FileContainingSymbol(ADMIN.into())).await {
        Ok(MessageResponse::FileDescriptorResponse(files)) => {
            !files.file_descriptor_proto.is_empty()
        }
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
            false
        }
        other => panic!("unexpected answer {other:?}"),
    }
}

#[tokio::test]
async fn reflection_neither_lists_nor_describes_admin_service_while_it_is_disabled() {
    let app = TestApp::spawn().await;

    let services = listed_services(&app).await;

    assert!(
        services.contains(&"readiness.v1.ReadinessService".to_owned()),
        "{services:?}"
    );
    assert!(!services.contains(&ADMIN.to_owned()), "{services:?}");
    assert!(!admin_is_described(&app).await);
    // Nor any of its messages (the raw-body read).
    let delivery = ask(
        &app,
        MessageRequest::FileContainingSymbol("readiness.v1.GetDeliveryResponse".into()),
    )
    .await;
    assert_eq!(delivery.unwrap_err().code(), tonic::Code::NotFound);
    app.stop().await;
}

#[tokio::test]
async fn reflection_lists_and_describes_admin_service_when_it_is_enabled() {
    let app = TestApp::spawn_with(|settings| settings.grpc_admin_enabled = true).await;

    assert!(listed_services(&app).await.contains(&ADMIN.to_owned()));
    assert!(admin_is_described(&app).await);
    // The generated client still speaks to it: same package and wire format after the move.
    let mut admin = pb::admin_service_client::AdminServiceClient::new(app.channel().await);
    let listed = admin
        .list_deliveries(pb::ListDeliveriesRequest::default())
        .await
        .unwrap();
    assert!(listed.into_inner().deliveries.is_empty());
    app.stop().await;
}
