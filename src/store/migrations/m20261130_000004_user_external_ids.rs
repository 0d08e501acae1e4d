//! Every external id Argyle reported for a user (its `external_id` can change): a lookup table
//! (`user_external_ids`, one row per id and user, so that a lookup by any of them is one index
//! scan) and the user's set as JSON on its row (read with the user, no second query). Existing
//! users keep the one id they had; `users.external_id` stays the greatest of the set.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use super::names::{UserExternalIds, Users};
use super::parts;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let external_ids = text(Users::ExternalIds).default("[]").to_owned();
        parts::add_columns(manager, Users::Table, [external_ids]).await?;
        manager
            .create_table(
                Table::create()
                    .table(UserExternalIds::Table)
                    .col(string(UserExternalIds::ExternalId))
                    .col(string(UserExternalIds::UserId))
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
        parts::drop_table(manager, UserExternalIds::Table).await?;
        parts::drop_columns(manager, Users::Table, [Users::ExternalIds]).await
    }
}
