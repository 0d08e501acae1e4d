//! The initial schema: the delivery inbox, users, accounts, reports and the event log.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use super::names::{Accounts, Deliveries, Events, Reports, Users};
use super::parts;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let tables = [
            Table::create()
                .table(Deliveries::Table)
                .col(big_pk_auto(Deliveries::Id))
                .col(string_uniq(Deliveries::BodySha256))
                .col(blob(Deliveries::Body))
                .col(string_null(Deliveries::EventName))
                .col(string_null(Deliveries::Subscription))
                .col(string_null(Deliveries::UserId))
                .col(string(Deliveries::Status))
                .col(text_null(Deliveries::Error))
                .col(timestamp_with_time_zone(Deliveries::ReceivedAt))
                .to_owned(),
            Table::create()
                .table(Users::Table)
                .col(string(Users::UserId).primary_key())
                .col(string_null(Users::ExternalId))
                .col(string(Users::State))
                .col(timestamp_with_time_zone(Users::StateSince))
                .col(timestamp_with_time_zone(Users::CreatedAt))
                .col(timestamp_with_time_zone(Users::UpdatedAt))
                .to_owned(),
            Table::create()
                .table(Accounts::Table)
                .col(string(Accounts::AccountId).primary_key())
                .col(string(Accounts::UserId))
                .col(string(Accounts::State))
                .col(text(Accounts::Facts))
                .col(string_null(Accounts::ErrorCode))
                .col(text_null(Accounts::ErrorMessage))
                .col(timestamp_with_time_zone_null(Accounts::LastSyncedAt))
                .col(timestamp_with_time_zone(Accounts::FirstSeenAt))
                .col(timestamp_with_time_zone(Accounts::UpdatedAt))
                .to_owned(),
            Table::create()
                .table(Reports::Table)
                .col(big_pk_auto(Reports::Seq))
                .col(string_uniq(Reports::Id))
                .col(string_null(Reports::ArgyleReportId).unique_key())
                .col(string(Reports::UserId))
                .col(string(Reports::ReportType))
                .col(timestamp_with_time_zone(Reports::GeneratedAt))
                .col(big_integer(Reports::DeliveryId))
                .to_owned(),
            Table::create()
                .table(Events::Table)
                .col(big_pk_auto(Events::Seq))
                .col(string(Events::Kind))
                .col(string(Events::UserId))
                .col(text(Events::Payload))
                .col(timestamp_with_time_zone(Events::RecordedAt))
                .to_owned(),
        ];
        for table in tables {
            manager.create_table(table).await?;
        }
        parts::create_indexes(
            manager,
            [
                parts::index(
                    "deliveries_status_id",
                    Deliveries::Table,
                    [Deliveries::Status, Deliveries::Id],
                ),
                parts::index("users_external_id", Users::Table, [Users::ExternalId]),
                parts::index(
                    "users_state_user_id",
                    Users::Table,
                    [Users::State, Users::UserId],
                ),
                parts::index(
                    "accounts_user_id",
                    Accounts::Table,
                    [Accounts::UserId, Accounts::AccountId],
                ),
                parts::index(
                    "reports_user_id_seq",
                    Reports::Table,
                    [Reports::UserId, Reports::Seq],
                ),
                parts::index(
                    "reports_type_seq",
                    Reports::Table,
                    [Reports::ReportType, Reports::Seq],
                ),
                parts::index(
                    "events_user_id_seq",
                    Events::Table,
                    [Events::UserId, Events::Seq],
                ),
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Events::Table.into_iden(),
            Reports::Table.into_iden(),
            Accounts::Table.into_iden(),
            Users::Table.into_iden(),
            Deliveries::Table.into_iden(),
        ] {
            parts::drop_table(manager, table).await?;
        }
        Ok(())
    }
}
