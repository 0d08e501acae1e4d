//! One index entry fewer per stored delivery: `(status, id)` indexed every delivery, yet only
//! the rejected ones are ever looked up by status in bulk (`inbox replay --failed`, `inbox list
//! --status failed`). A partial index holds just those; the rare listing of `ignored` or
//! `applied` deliveries walks the primary key, where such rows are most of the table anyway.
//! Plain SQL: the schema builder has no partial indexes, and this text is the same on SQLite
//! and PostgreSQL.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX IF EXISTS deliveries_status_id")
            .await?;
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS deliveries_rejected_id ON deliveries (id) \
             WHERE status = 'rejected'",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX IF EXISTS deliveries_rejected_id")
            .await?;
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS deliveries_status_id ON deliveries (status, id)",
        )
        .await?;
        Ok(())
    }
}
