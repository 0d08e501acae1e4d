//! The two server streams, `WatchReadiness` and `StreamReportEvents`: request → start position
//! and filter → `core::subscribe` → pb messages. Delivery semantics live in `core::log`.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::convert;
use super::pb;
use super::status::invalid_argument;
use crate::core::{
    Core, CoreError, Cursor, EventFilter, LoggedEvent, ReportFilter, Start, StreamItem, UserLookup,
};
use crate::domain::events::{ANNOUNCEMENT_KINDS, DomainEvent, READINESS_KINDS, REPORT_KINDS};
use crate::domain::{ReportType, UserId};

/// A boxed server stream, as tonic's generated traits want it.
pub type ServerStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The start of a stream: a cursor wins over the start position; one of them is required.
pub fn start(position: i32, after_cursor: &str) -> Result<Start, Status> {
    if !after_cursor.trim().is_empty() {
        return Cursor::decode(after_cursor)
            .map(Start::After)
            .ok_or_else(|| {
                invalid_argument("after_cursor", "not a cursor issued by this service")
            });
    }
    match pb::StartPosition::try_from(position) {
        Ok(pb::StartPosition::Beginning) => Ok(Start::Beginning),
        Ok(pb::StartPosition::Now) => Ok(Start::Now),
        Ok(pb::StartPosition::Unspecified) => Err(invalid_argument(
            "start",
            "choose START_POSITION_BEGINNING or START_POSITION_NOW, or resume with after_cursor",
        )),
        Err(_) => Err(invalid_argument(
            "start",
            format!("unknown start position {position}"),
        )),
    }
}

/// The user a stream is limited to, if any: by id, or by external id resolved now.
pub async fn user_filter(
    core: &Core,
    user_id: &str,
    external_id: &str,
) -> Result<Option<UserId>, Status> {
    match (user_id.trim(), external_id.trim()) {
        ("", "") => Ok(None),
        (id, "") => Ok(Some(convert::uuid_field("user_id", id)?)),
        ("", external) => {
            let user = core
                .user_readiness(
                    &UserLookup::ExternalId(external.to_owned()),
                    &Default::default(),
                )
                .await?;
            Ok(Some(user.value.id))
        }
        _ => Err(invalid_argument(
            "external_id",
            "set user_id or external_id, not both",
        )),
    }
}

/// A stream's response message: the markers every stream carries (events are each stream's own).
trait StreamMessage: Sized + Send + 'static {
    fn caught_up(marker: pb::CaughtUp) -> Self;
    fn heartbeat(beat: pb::Heartbeat) -> Self;
}

/// Implements [`StreamMessage`] for a response whose `message` oneof has the usual `CaughtUp`
/// and `Heartbeat`.
macro_rules! stream_message {
    ($response:ty, $message:path) => {
        impl StreamMessage for $response {
            fn caught_up(marker: pb::CaughtUp) -> Self {
                use $message as Message;
                Self {
                    message: Some(Message::CaughtUp(marker)),
                }
            }
            fn heartbeat(beat: pb::Heartbeat) -> Self {
                use $message as Message;
                Self {
                    message: Some(Message::Heartbeat(beat)),
                }
            }
        }
    };
}

stream_message!(
    pb::WatchReadinessResponse,
    pb::watch_readiness_response::Message
);
stream_message!(
    pb::StreamReportEventsResponse,
    pb::stream_report_events_response::Message
);

/// The core's stream items as `M` messages, each event converted by `event`.
fn respond<M: StreamMessage>(
    items: mpsc::Receiver<Result<StreamItem, CoreError>>,
    event: fn(&LoggedEvent) -> Result<M, Status>,
) -> ServerStream<M> {
    Box::pin(ReceiverStream::new(items).map(move |item| {
        Ok(match item.map_err(Status::from)? {
            StreamItem::Event(logged) => event(&logged)?,
            StreamItem::CaughtUp(cursor) => M::caught_up(pb::CaughtUp {
                cursor: cursor.encode(),
            }),
            StreamItem::Heartbeat(cursor) => M::heartbeat(pb::Heartbeat {
                cursor: cursor.encode(),
                sent_at: Some(convert::timestamp(Utc::now())),
            }),
        })
    }))
}

/// Opens `WatchReadiness`.
pub async fn watch_readiness(
    core: &Core,
    request: pb::WatchReadinessRequest,
) -> Result<ServerStream<pb::WatchReadinessResponse>, Status> {
    let start = start(request.start, &request.after_cursor)?;
    let user = user_filter(core, &request.user_id, &request.external_id).await?;
    let states = request
        .states
        .iter()
        .map(|&state| match convert::readiness_filter(state, "states")? {
            Some(state) => Ok(state),
            None => Err(invalid_argument(
                "states",
                "READINESS_STATE_UNSPECIFIED is not a state",
            )),
        })
        .collect::<Result<HashSet<_>, Status>>()?;
    let filter: EventFilter = Arc::new(move |event| match event {
        DomainEvent::ReadinessChanged {
            user: changed, to, ..
        } => user.is_none_or(|user| user == *changed) && (states.is_empty() || states.contains(to)),
        _ => false,
    });
    let items = core.subscribe(start, READINESS_KINDS, filter).await?;
    Ok(respond(items, readiness_change))
}

fn readiness_change(logged: &LoggedEvent) -> Result<pb::WatchReadinessResponse, Status> {
    let DomainEvent::ReadinessChanged { user, from, to } = &logged.event else {
        return Err(Status::internal("filter passed an event of another kind"));
    };
    let change = pb::ReadinessChange {
        event_id: logged.seq.to_string(),
        cursor: Cursor(logged.seq).encode(),
        user_id: user.to_string(),
        previous_state: from
            .map_or(pb::ReadinessState::Unspecified, convert::readiness_state)
            .into(),
        state: convert::readiness_state(*to).into(),
        changed_at: Some(convert::timestamp(logged.recorded_at)),
    };
    Ok(pb::WatchReadinessResponse {
        message: Some(pb::watch_readiness_response::Message::Change(change)),
    })
}

/// Opens `StreamReportEvents`.
pub async fn stream_report_events(
    core: &Core,
    request: pb::StreamReportEventsRequest,
) -> Result<ServerStream<pb::StreamReportEventsResponse>, Status> {
    let start = start(request.start, &request.after_cursor)?;
    let (known_type, unknown_types_only) = convert::report_type_filter(request.r#type)?;
    let reports = ReportFilter {
        user: user_filter(core, &request.user_id, &request.external_id).await?,
        type_name: known_type.map(str::to_owned),
        unknown_types_only,
        status: None,
    };
    let type_name = (!request.type_name.is_empty()).then(|| request.type_name.clone());
    let updates = request.include_updates;
    let filter: EventFilter = Arc::new(move |event| {
        let (user, report_type) = match event {
            DomainEvent::ReportGenerated {
                user, report_type, ..
            } => (*user, report_type.as_str()),
            DomainEvent::ReportUpdated { report } if updates => {
                (report.user, report.report_type.as_str())
            }
            _ => return false,
        };
        reports.matches(user, report_type)
            && type_name.as_ref().is_none_or(|name| name == report_type)
    });
    let kinds = if updates {
        REPORT_KINDS
    } else {
        ANNOUNCEMENT_KINDS
    };
    let items = core.subscribe(start, kinds, filter).await?;
    Ok(respond(items, report_event))
}

fn report_event(logged: &LoggedEvent) -> Result<pb::StreamReportEventsResponse, Status> {
    use pb::stream_report_events_response::Message;
    let (event_id, cursor) = (logged.seq.to_string(), Cursor(logged.seq).encode());
    let message = match &logged.event {
        DomainEvent::ReportGenerated {
            report,
            user,
            report_type,
            argyle_report_id,
            snapshot,
        } => Message::ReportGenerated(pb::ReportGenerated {
            event_id,
            cursor,
            report: Some(match snapshot {
                Some(snapshot) => convert::report(snapshot),
                None => convert::announced_report(
                    *report,
                    *user,
                    &ReportType::from_argyle(report_type),
                    argyle_report_id.as_deref(),
                    logged.recorded_at,
                ),
            }),
        }),
        DomainEvent::ReportUpdated { report } => Message::ReportUpdated(pb::ReportUpdated {
            event_id,
            cursor,
            report: Some(convert::report(report)),
        }),
        _ => return Err(Status::internal("filter passed an event of another kind")),
    };
    Ok(pb::StreamReportEventsResponse {
        message: Some(message),
    })
}
