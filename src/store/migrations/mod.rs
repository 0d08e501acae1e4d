//! Schema migrations, written with the schema builder so they run unchanged on SQLite and
//! PostgreSQL. One migration per file. A shipped migration never changes the schema it builds
//! (`tests/api/schema.rs` compares a fresh database with the recorded one); its code may move onto
//! the shared steps in [`parts`] only where its DDL stays the same.

use sea_orm_migration::prelude::*;

mod m20261127_000001_initial;
mod m20261127_000002_users_external_id_user_id;
mod m20261127_000003_write_probe;
mod m20261130_000004_user_external_ids;
mod m20261130_000005_report_pipeline;
mod m20261130_000006_users_state_since;
mod m20261130_000007_deliveries_rejected_index;
mod m20261130_000008_reports_delivery_id;
mod names;
mod parts;

/// Every migration, in order. Run at start-up by [`super::connect`].
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261127_000001_initial::Migration),
            Box::new(m20261127_000002_users_external_id_user_id::Migration),
            Box::new(m20261127_000003_write_probe::Migration),
            Box::new(m20261130_000004_user_external_ids::Migration),
            Box::new(m20261130_000005_report_pipeline::Migration),
            Box::new(m20261130_000006_users_state_since::Migration),
            Box::new(m20261130_000007_deliveries_rejected_index::Migration),
            Box::new(m20261130_000008_reports_delivery_id::Migration),
        ]
    }
}
