//! sea-orm entities, one module per table. Rows hold strings and JSON; `super` converts them to
//! domain types.

pub mod delivery {
    use sea_orm::entity::prelude::*;

    /// One raw webhook delivery as received, unique by the SHA-256 of its body.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "deliveries")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub body_sha256: String,
        pub body: Vec<u8>,
        pub event_name: Option<String>,
        pub subscription: Option<String>,
        pub user_id: Option<String>,
        pub status: String,
        pub error: Option<String>,
        pub received_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod user {
    use sea_orm::entity::prelude::*;

    /// A payroll user and their derived readiness.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        /// The greatest of `external_ids` (order-independent), for the old single-id lookups.
        pub external_id: Option<String>,
        /// Every external id Argyle reported for the user, a sorted JSON array of strings
        /// (`[]` on rows written before it existed: then `external_id` is the only one).
        #[sea_orm(column_type = "Text")]
        pub external_ids: String,
        pub state: String,
        pub state_since: DateTimeUtc,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        /// A user's accounts, so that a user and its accounts are read in one query.
        #[sea_orm(has_many = "super::account::Entity")]
        Accounts,
    }

    impl Related<super::account::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Accounts.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod account {
    use sea_orm::entity::prelude::*;

    /// A payroll account: its facts (JSON) and the state derived from them.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "accounts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub account_id: String,
        pub user_id: String,
        pub state: String,
        #[sea_orm(column_type = "Text")]
        pub facts: String,
        pub error_code: Option<String>,
        #[sea_orm(column_type = "Text", nullable)]
        pub error_message: Option<String>,
        pub last_synced_at: Option<DateTimeUtc>,
        pub first_seen_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(
            belongs_to = "super::user::Entity",
            from = "Column::UserId",
            to = "super::user::Column::UserId"
        )]
        User,
    }

    impl Related<super::user::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::User.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod report {
    use sea_orm::entity::prelude::*;

    /// A report, announced or requested; `seq` orders reports for pagination.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "reports")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        #[sea_orm(unique)]
        pub id: String,
        #[sea_orm(unique)]
        pub argyle_report_id: Option<String>,
        pub user_id: String,
        pub report_type: String,
        /// When this service first recorded the report.
        pub generated_at: DateTimeUtc,
        /// The announcing delivery; 0 when none (see migration 000005).
        pub delivery_id: i64,
        pub status: String,
        #[sea_orm(column_type = "Text", nullable)]
        pub status_reason: Option<String>,
        pub origin: String,
        #[sea_orm(unique)]
        pub request_id: Option<String>,
        /// A hash of the request's arguments, to refuse a reused `request_id` with others.
        pub request_fingerprint: Option<String>,
        pub requested_at: Option<DateTimeUtc>,
        pub announced_at: Option<DateTimeUtc>,
        /// What Argyle's API tells of the report (JSON).
        #[sea_orm(column_type = "Text")]
        pub details: String,
        pub updated_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod event {
    use sea_orm::entity::prelude::*;

    /// One entry of the ordered event log.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "events")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub kind: String,
        pub user_id: String,
        #[sea_orm(column_type = "Text")]
        pub payload: String,
        pub recorded_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod write_probe {
    use sea_orm::entity::prelude::*;

    /// One row, written by readiness while the database refuses writes, to learn when it takes
    /// them again; `probes` counts those writes so that each one changes the row.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "write_probe")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        pub probes: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod user_external_id {
    use sea_orm::entity::prelude::*;

    /// One external id of one user: a lookup by any id a user ever had is one index scan.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "user_external_ids")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub external_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod job {
    use sea_orm::entity::prelude::*;

    /// A job of the report pipeline (the transactional outbox).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "jobs")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub kind: String,
        /// Makes a job exactly once per cause (an entry into READY, a request id, a report).
        #[sea_orm(unique)]
        pub dedupe_key: String,
        pub report_id: String,
        pub user_id: String,
        #[sea_orm(column_type = "Text")]
        pub payload: String,
        pub state: String,
        pub attempts: i32,
        /// When PENDING: when the next attempt is due; when RUNNING: the end of the lease.
        pub next_attempt_at: DateTimeUtc,
        #[sea_orm(column_type = "Text", nullable)]
        pub last_error: Option<String>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
