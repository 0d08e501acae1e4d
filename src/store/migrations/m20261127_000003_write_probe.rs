//! A one-row table that readiness writes to while the database refuses writes (disk full, I/O
//! error, read-only): the tiny write that tells when it takes them again (`store::probe_write`).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use super::names::WriteProbe;
use super::parts;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WriteProbe::Table)
                    .col(integer(WriteProbe::Id).primary_key())
                    .col(big_integer(WriteProbe::Probes).default(0))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        parts::drop_table(manager, WriteProbe::Table).await
    }
}
