//! Looking a user up by external id orders by user id (to detect an id shared by two users). On
//! a large table PostgreSQL preferred walking the primary key in order and filtering, which read
//! every row (771 ms at 1,000,000 users, `bench/scale.sh`). An index on (external_id, user_id)
//! answers both the filter and the order, so the lookup stays one short index range scan.

use sea_orm_migration::prelude::*;

use super::names::Users;
use super::parts;

#[derive(DeriveMigrationName)]
pub struct Migration;

const OLD: &str = "users_external_id";
const NEW: &str = "users_external_id_user_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let index = [Users::ExternalId, Users::UserId];
        manager
            .create_index(parts::index(NEW, Users::Table, index))
            .await?;
        parts::drop_index(manager, OLD, Users::Table).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(parts::index(OLD, Users::Table, [Users::ExternalId]))
            .await?;
        parts::drop_index(manager, NEW, Users::Table).await
    }
}
