//! The report pipeline: a report's status, origin and request, what Argyle's API tells of it
//! (JSON), and the jobs table (the transactional outbox: a job is written in the transaction of
//! the change that causes it, and run by a worker of any replica).
//!
//! Existing reports were all announced by Argyle: status `generated`, origin `announced`,
//! announced when they were recorded. `delivery_id` stays NOT NULL (SQLite cannot relax it in
//! place): 0 stands for "no announcing delivery" (a requested report not announced yet).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use super::names::{Jobs, Reports};
use super::parts;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns = [
            string(Reports::Status).default("generated").to_owned(),
            text_null(Reports::StatusReason),
            string(Reports::Origin).default("announced").to_owned(),
            string_null(Reports::RequestId),
            string_null(Reports::RequestFingerprint),
            timestamp_with_time_zone_null(Reports::RequestedAt),
            timestamp_with_time_zone_null(Reports::AnnouncedAt),
            text(Reports::Details).default("{}").to_owned(),
            timestamp_with_time_zone_null(Reports::UpdatedAt),
        ];
        parts::add_columns(manager, Reports::Table, columns).await?;
        let backfill = Query::update()
            .table(Reports::Table)
            .value(Reports::AnnouncedAt, Expr::col(Reports::GeneratedAt))
            .value(Reports::UpdatedAt, Expr::col(Reports::GeneratedAt))
            .to_owned();
        manager.exec_stmt(backfill).await?;
        let mut request_id =
            parts::index("reports_request_id", Reports::Table, [Reports::RequestId]);
        let status_seq = parts::index(
            "reports_status_seq",
            Reports::Table,
            [Reports::Status, Reports::Seq],
        );
        parts::create_indexes(manager, [request_id.unique().to_owned(), status_seq]).await?;

        manager
            .create_table(
                Table::create()
                    .table(Jobs::Table)
                    .col(big_pk_auto(Jobs::Id))
                    .col(string(Jobs::Kind))
                    .col(string_uniq(Jobs::DedupeKey))
                    .col(string(Jobs::ReportId))
                    .col(string(Jobs::UserId))
                    .col(text(Jobs::Payload))
                    .col(string(Jobs::State))
                    .col(integer(Jobs::Attempts))
                    .col(timestamp_with_time_zone(Jobs::NextAttemptAt))
                    .col(text_null(Jobs::LastError))
                    .col(timestamp_with_time_zone(Jobs::CreatedAt))
                    .col(timestamp_with_time_zone(Jobs::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        parts::create_indexes(
            manager,
            [
                parts::index(
                    "jobs_state_next_attempt_at",
                    Jobs::Table,
                    [Jobs::State, Jobs::NextAttemptAt],
                ),
                parts::index("jobs_report_id", Jobs::Table, [Jobs::ReportId]),
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        parts::drop_table(manager, Jobs::Table).await?;
        for index in ["reports_request_id", "reports_status_seq"] {
            parts::drop_index(manager, index, Reports::Table).await?;
        }
        let columns = [
            Reports::Status,
            Reports::StatusReason,
            Reports::Origin,
            Reports::RequestId,
            Reports::RequestFingerprint,
            Reports::RequestedAt,
            Reports::AnnouncedAt,
            Reports::Details,
            Reports::UpdatedAt,
        ];
        parts::drop_columns(manager, Reports::Table, columns).await
    }
}
