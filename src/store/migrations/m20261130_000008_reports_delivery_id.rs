//! An index on reports by the delivery that announced them. Each ingest batch that names a
//! report looks it up by its announcing delivery too (`store::reports_named`); without this index
//! that branch of the batch's report query read the whole reports table on every such batch, on
//! both databases.

use sea_orm_migration::prelude::*;

use super::parts;

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
        let mut index = parts::index(NAME, Reports::Table, [Reports::DeliveryId]);
        manager.create_index(index.if_not_exists().to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        parts::drop_index(manager, NAME, Reports::Table).await
    }
}
