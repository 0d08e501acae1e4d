//! An index on reports by the delivery that announced them. Each ingest batch that names a
//! report looks it up by its announcing delivery too (`store::reports_named`); without this index
//! that branch of the batch's report query read the whole reports table on every such batch, on
//! both databases.

use sea_orm_migration::prelude::*;

use super::names::Reports;
use super::parts;

#[derive(DeriveMigrationName)]
pub struct Migration;

const NAME: &str = "reports_delivery_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        parts::create_index_if_missing(manager, NAME, Reports::Table, [Reports::DeliveryId]).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        parts::drop_index(manager, NAME, Reports::Table).await
    }
}
