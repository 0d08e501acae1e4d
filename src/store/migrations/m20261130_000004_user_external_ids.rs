//! Every external id Argyle reported for a user (its `external_id` can change): a lookup table
//! (`user_external_ids`, one row per id and user, so that a lookup by any of them is one index
//! scan) and the user's set as JSON on its row (read with the user, no second query). Existing
//! users keep the one id they had; `users.external_id` stays the greatest of the set.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    UserId,
    ExternalId,
    ExternalIds,
}

#[derive(DeriveIden)]
enum UserExternalIds {
    Table,
    ExternalId,
    UserId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(
                        ColumnDef::new(Users::ExternalIds)
                            .text()
                            .not_null()
                            .default("[]"),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(UserExternalIds::Table)
                    .col(
                        ColumnDef::new(UserExternalIds::ExternalId)
                            .string()
                            .not_null(),
                    )
                    .col(ColumnDef::new(UserExternalIds::UserId).string().not_null())
                    .primary_key(
                        Index::create()
                            .col(UserExternalIds::ExternalId)
                            .col(UserExternalIds::UserId),
                    )
                    .to_owned(),
            )
            .await?;
        // The one id each existing user has (its JSON set is read as containing it).
        let backfill = Query::insert()
            .into_table(UserExternalIds::Table)
            .columns([UserExternalIds::ExternalId, UserExternalIds::UserId])
            .select_from(
                Query::select()
                    .columns([Users::ExternalId, Users::UserId])
                    .from(Users::Table)
                    .and_where(Expr::col(Users::ExternalId).is_not_null())
                    .to_owned(),
            )
            .map_err(|error| DbErr::Migration(error.to_string()))?
            .to_owned();
        manager.exec_stmt(backfill).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(UserExternalIds::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(Users::ExternalIds)
                    .to_owned(),
            )
            .await
    }
}
