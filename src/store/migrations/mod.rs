//! Schema migrations, written with the schema builder so they run unchanged on SQLite and
//! PostgreSQL. One migration per file; never edit one that has shipped.

use sea_orm_migration::prelude::*;

mod m20261127_000001_initial;
mod m20261127_000002_users_external_id_user_id;
mod m20261127_000003_write_probe;
mod m20261130_000004_user_external_ids;
mod m20261130_000005_report_pipeline;
mod m20261130_000006_users_state_since;
mod m20261130_000007_deliveries_rejected_index;
mod m20261130_000008_reports_delivery_id;
mod one_index;

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
