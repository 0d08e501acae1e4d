//! Looking a user up by external id orders by user id (to detect an id shared by two users). On
//! a large table PostgreSQL preferred walking the primary key in order and filtering, which read
//! every row (771 ms at 1,000,000 users, `bench/scale.sh`). An index on (external_id, user_id)
//! answers both the filter and the order, so the lookup stays one short index range scan.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    UserId,
    ExternalId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("users_external_id_user_id")
                    .table(Users::Table)
                    .col(Users::ExternalId)
                    .col(Users::UserId)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("users_external_id")
                    .table(Users::Table)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("users_external_id")
                    .table(Users::Table)
                    .col(Users::ExternalId)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("users_external_id_user_id")
                    .table(Users::Table)
                    .to_owned(),
            )
            .await
    }
}
