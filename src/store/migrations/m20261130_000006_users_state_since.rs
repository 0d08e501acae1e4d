//! An index on users by state and the time they entered it, so that the oldest user still in a
//! state (the "stuck PENDING" gauge read at each metrics scrape) is one index lookup.

use sea_orm_migration::prelude::*;

use super::names::Users;
use super::parts;

#[derive(DeriveMigrationName)]
pub struct Migration;

const NAME: &str = "users_state_state_since";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        parts::create_index_if_missing(
            manager,
            NAME,
            Users::Table,
            [Users::State, Users::StateSince],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        parts::drop_index(manager, NAME, Users::Table).await
    }
}
