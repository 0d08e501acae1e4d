//! The body of a migration that adds one plain index (and of its `down`), for the migrations
//! written since this helper; the earlier ones keep their own code (shipped migrations are not
//! edited).

use sea_orm_migration::prelude::*;

/// Creates index `name` on `table` over `columns`, unless it exists.
pub async fn create<T, C>(
    manager: &SchemaManager<'_>,
    name: &str,
    table: T,
    columns: impl IntoIterator<Item = C>,
) -> Result<(), DbErr>
where
    T: IntoIden,
    C: IntoIndexColumn,
{
    let mut index = Index::create();
    index.name(name).table(table).if_not_exists();
    for column in columns {
        index.col(column);
    }
    manager.create_index(index).await
}

/// Drops index `name` on `table`.
pub async fn drop<T: IntoIden>(
    manager: &SchemaManager<'_>,
    name: &str,
    table: T,
) -> Result<(), DbErr> {
    manager
        .drop_index(Index::drop().name(name).table(table).to_owned())
        .await
}
