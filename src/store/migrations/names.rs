//! The names of the tables and columns the migrations touch, shared by all of them (each name
//! becomes its snake_case identifier). A name stays here while any migration uses it, even after
//! a later migration drops what it names.

use sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
pub enum Deliveries {
    Table,
    Id,
    BodySha256,
    Body,
    EventName,
    Subscription,
    UserId,
    Status,
    Error,
    ReceivedAt,
}

#[derive(DeriveIden)]
pub enum Users {
    Table,
    UserId,
    ExternalId,
    State,
    StateSince,
    CreatedAt,
    UpdatedAt,
    ExternalIds,
}

#[derive(DeriveIden)]
pub enum Accounts {
    Table,
    AccountId,
    UserId,
    State,
    Facts,
    ErrorCode,
    ErrorMessage,
    LastSyncedAt,
    FirstSeenAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
pub enum Reports {
    Table,
    Seq,
    Id,
    ArgyleReportId,
    UserId,
    ReportType,
    GeneratedAt,
    DeliveryId,
    Status,
    StatusReason,
    Origin,
    RequestId,
    RequestFingerprint,
    RequestedAt,
    AnnouncedAt,
    Details,
    UpdatedAt,
}

#[derive(DeriveIden)]
pub enum Events {
    Table,
    Seq,
    Kind,
    UserId,
    Payload,
    RecordedAt,
}

#[derive(DeriveIden)]
pub enum WriteProbe {
    Table,
    Id,
    Probes,
}

#[derive(DeriveIden)]
pub enum UserExternalIds {
    Table,
    ExternalId,
    UserId,
}

#[derive(DeriveIden)]
pub enum Jobs {
    Table,
    Id,
    Kind,
    DedupeKey,
    ReportId,
    UserId,
    Payload,
    State,
    Attempts,
    NextAttemptAt,
    LastError,
    CreatedAt,
    UpdatedAt,
}
