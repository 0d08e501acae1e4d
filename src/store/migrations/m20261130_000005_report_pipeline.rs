//! The report pipeline: a report's status, origin and request, what Argyle's API tells of it
//! (JSON), and the jobs table (the transactional outbox: a job is written in the transaction of
//! the change that causes it, and run by a worker of any replica).
//!
//! Existing reports were all announced by Argyle: status `generated`, origin `announced`,
//! announced when they were recorded. `delivery_id` stays NOT NULL (SQLite cannot relax it in
//! place): 0 stands for "no announcing delivery" (a requested report not announced yet).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Reports {
    Table,
    Seq,
    Status,
    StatusReason,
    Origin,
    RequestId,
    RequestFingerprint,
    RequestedAt,
    AnnouncedAt,
    GeneratedAt,
    Details,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Jobs {
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

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        let columns = [
            ColumnDef::new(Reports::Status)
                .string()
                .not_null()
                .default("generated")
                .to_owned(),
            ColumnDef::new(Reports::StatusReason)
                .text()
                .null()
                .to_owned(),
            ColumnDef::new(Reports::Origin)
                .string()
                .not_null()
                .default("announced")
                .to_owned(),
            ColumnDef::new(Reports::RequestId)
                .string()
                .null()
                .to_owned(),
            ColumnDef::new(Reports::RequestFingerprint)
                .string()
                .null()
                .to_owned(),
            ColumnDef::new(Reports::RequestedAt)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            ColumnDef::new(Reports::AnnouncedAt)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            ColumnDef::new(Reports::Details)
                .text()
                .not_null()
                .default("{}")
                .to_owned(),
            ColumnDef::new(Reports::UpdatedAt)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
        ];
        for mut column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Reports::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        let backfill = Query::update()
            .table(Reports::Table)
            .value(Reports::AnnouncedAt, Expr::col(Reports::GeneratedAt))
            .value(Reports::UpdatedAt, Expr::col(Reports::GeneratedAt))
            .to_owned();
        manager.exec_stmt(backfill).await?;
        manager
            .create_index(
                Index::create()
                    .name("reports_request_id")
                    .table(Reports::Table)
                    .col(Reports::RequestId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("reports_status_seq")
                    .table(Reports::Table)
                    .col(Reports::Status)
                    .col(Reports::Seq)
                    .to_owned(),
            )
            .await?;

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
        manager
            .create_index(
                Index::create()
                    .name("jobs_state_next_attempt_at")
                    .table(Jobs::Table)
                    .col(Jobs::State)
                    .col(Jobs::NextAttemptAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("jobs_report_id")
                    .table(Jobs::Table)
                    .col(Jobs::ReportId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Jobs::Table).to_owned())
            .await?;
        for index in ["reports_request_id", "reports_status_seq"] {
            manager
                .drop_index(Index::drop().name(index).table(Reports::Table).to_owned())
                .await?;
        }
        for column in [
            Reports::Status,
            Reports::StatusReason,
            Reports::Origin,
            Reports::RequestId,
            Reports::RequestFingerprint,
            Reports::RequestedAt,
            Reports::AnnouncedAt,
            Reports::Details,
            Reports::UpdatedAt,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Reports::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
