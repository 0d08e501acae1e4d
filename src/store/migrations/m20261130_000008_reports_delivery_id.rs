//! An index on reports by the delivery that announced them. Each ingest batch that names a
//! report looks it up by its announcing delivery too (`store::Batch::load`); without this index
//! that lookup, one branch of the batch's report query, read the whole reports table on every
//! such batch, on both databases.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Reports {
    Table,
    DeliveryId,
}

const NAME: &str = "reports_delivery_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(NAME)
                    .table(Reports::Table)
                    .col(Reports::DeliveryId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(NAME).table(Reports::Table).to_owned())
            .await
    }
}
