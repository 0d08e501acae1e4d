//! The one mapping from core errors to gRPC statuses. Internal causes are logged with their
//! chain and never sent to the client.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::core::CoreError;
use crate::telemetry::error_chain;

/// `INVALID_ARGUMENT` with a `google.rpc.BadRequest` naming the field.
pub fn invalid_argument(field: &str, reason: impl Into<String>) -> Status {
    let reason = bounded(reason.into());
    Status::with_error_details(
        Code::InvalidArgument,
        format!("{field}: {reason}"),
        ErrorDetails::with_bad_request_violation(field, reason),
    )
}

impl From<CoreError> for Status {
    fn from(error: CoreError) -> Self {
        match error {
            CoreError::InvalidArgument { field, reason } => invalid_argument(field, reason),
            CoreError::NotFound(what) => Status::not_found(bounded(format!("{what} not found"))),
            CoreError::FailedPrecondition(message) => Status::failed_precondition(bounded(message)),
            CoreError::ShuttingDown => Status::unavailable(error.to_string()),
            CoreError::DeadlineExceeded(message) => Status::deadline_exceeded(bounded(message)),
            CoreError::Behind(message) => Status::unavailable(bounded(message)),
            CoreError::ResourceExhausted(message) => Status::resource_exhausted(bounded(message)),
            CoreError::Upstream(message) => {
                tracing::warn!(%message, "Argyle failed a document download");
                Status::unavailable(bounded(format!("Argyle failed: {message}; retry later")))
            }
            // Logged once, when it was found.
            CoreError::DatabaseFileChanged => {
                Status::unavailable("the database is unavailable; retry later")
            }
            CoreError::Unavailable(_) => {
                metrics::counter!(crate::metrics::DATABASE_ERRORS).increment(1);
                tracing::warn!(error = %error_chain(&error), "gRPC request failed");
                Status::unavailable("the database is unavailable; retry later")
            }
            CoreError::Internal(_) => {
                tracing::error!(error = %error_chain(&error), "gRPC request failed");
                Status::internal("internal error")
            }
        }
    }
}

/// A last bound on any message we build: echoed input is already cut at each source (see
/// [`crate::domain::echo`]), and this keeps a message well inside HTTP/2 header limits whatever
/// else it contains.
fn bounded(message: String) -> String {
    const MAX: usize = 4 * crate::domain::MAX_ECHO_BYTES;
    if message.len() <= MAX {
        message
    } else {
        format!("{}…", crate::domain::clip(&message, MAX))
    }
}
