//! PostgreSQL's statements whose text does not depend on the batch: lists of keys as one array
//! parameter (`= ANY($1)`, see [`one_of`]), and multi-row writes, whose rows travel as a few
//! parameters read by one `ROWS FROM` scan. Each `NOT NULL` column of a plain type (text,
//! bytea, integers, booleans, timestamps) is one array parameter, expanded by `unnest`: sqlx
//! sends it in the binary format, so a body is copied, not hex-encoded and lexed. The other
//! columns (the nullable ones: sea-query binds no arrays holding NULL) travel as one JSON array,
//! expanded by `json_populate_recordset` into the table's own row type; `ROWS FROM` zips the
//! two by position. sqlx prepares each text once per connection, and PostgreSQL plans it once;
//! a `VALUES` list instead has one text per batch size, each prepared and planned anew and
//! competing for the statement cache. SQLite keeps the `VALUES` lists: it has no network round
//! trip and plans in microseconds.

use sea_orm::sea_query::extension::postgres::PgFunc;
use sea_orm::sea_query::{ArrayType, Expr, ExprTrait, Value};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, IdenStatic, Iterable,
    QueryResult, Statement,
};

use super::StoreError;

/// A multi-row write of `rows` as one statement with a fixed text.
pub(super) struct RowsWrite<'a, E: EntityTrait> {
    /// Every column the rows set, in the table's order.
    columns: Vec<E::Column>,
    /// The columns that travel as arrays, each with its SQL array type and its values.
    arrays: Vec<(E::Column, &'static str, Value)>,
    /// The other columns' values, as a JSON array of objects; `None` if there are none.
    json: Option<String>,
    conflict: Conflict<'a, E>,
    returning: &'a str,
    /// Taken before the rows are written (the event log's append lock), in the same statement.
    prefix: &'a str,
}

/// What to do with a row whose key exists.
pub(super) enum Conflict<'a, E: EntityTrait> {
    /// Fail (a plain insert).
    Fail,
    /// Keep the existing row.
    Ignore(&'a [E::Column]),
    /// Update these columns from the new row.
    Update(E::Column, &'a [E::Column]),
}

impl<'a, E: EntityTrait> RowsWrite<'a, E> {
    /// `rows`, which all set the same columns.
    pub(super) fn new<A>(rows: &[A], conflict: Conflict<'a, E>) -> Result<Self, StoreError>
    where
        A: ActiveModelTrait<Entity = E>,
    {
        let table = E::default().table_name();
        // Every row sets the columns the first one sets (none if there are no rows).
        let columns: Vec<E::Column> = rows
            .first()
            .map(|first| {
                E::Column::iter()
                    .filter(|column| first.get(*column).is_set())
                    .collect()
            })
            .unwrap_or_default();
        let value =
            |row: &A, column: E::Column| row.get(column).into_value().unwrap_or(Value::Bool(None));
        let mut arrays = vec![];
        let mut in_json = vec![];
        for &column in &columns {
            // A column's value type comes from its field's type: the same in every row.
            match array_type(&value(&rows[0], column)) {
                Some((kind, sql)) if !column.def().is_null() => {
                    let values = rows
                        .iter()
                        .map(|row| match value(row, column) {
                            null if is_null(&null) => Err(StoreError::Corrupt {
                                table,
                                detail: format!("NULL in the NOT NULL column {}", column.as_str()),
                            }),
                            present => Ok(present),
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    arrays.push((column, sql, Value::Array(kind, Some(Box::new(values)))));
                }
                _ => in_json.push(column),
            }
        }
        let json = if in_json.is_empty() {
            None
        } else {
            let objects: Vec<serde_json::Value> = rows
                .iter()
                .map(|row| {
                    in_json
                        .iter()
                        .map(|&column| Ok((column.as_str().to_owned(), json(&value(row, column))?)))
                        .collect::<Result<serde_json::Map<_, _>, StoreError>>()
                        .map(serde_json::Value::Object)
                })
                .collect::<Result<_, _>>()?;
            Some(
                serde_json::to_string(&objects).map_err(|error| StoreError::Corrupt {
                    table,
                    detail: format!("rows do not serialise: {error}"),
                })?,
            )
        };
        Ok(Self {
            columns,
            arrays,
            json,
            conflict,
            returning: "",
            prefix: "",
        })
    }

    /// Adds `RETURNING <columns>`.
    pub(super) fn returning(mut self, columns: &'a str) -> Self {
        self.returning = columns;
        self
    }

    /// Runs `select` (a `SELECT` of functions, such as a lock) in the same statement before any
    /// row is written.
    pub(super) fn after(mut self, select: &'a str) -> Self {
        self.prefix = select;
        self
    }

    /// The rows' parameters, in the order [`RowsWrite::insert`] numbers them.
    fn into_values(self) -> Vec<Value> {
        let json = self.json.map(Value::from);
        self.arrays
            .into_iter()
            .map(|(_, _, values)| values)
            .chain(json)
            .collect()
    }

    /// The `INSERT` alone, reading its rows from parameters `$first` on (the arrays, then the
    /// JSON); `from` goes before the rows' source in its `FROM` (a CTE the rows must wait for).
    fn insert(&self, first: usize, from: &str) -> String {
        let table = E::default().table_name();
        let columns = names(&self.columns);
        let mut sources: Vec<String> = self
            .arrays
            .iter()
            .enumerate()
            .map(|(index, (_, sql, _))| format!("unnest(${}::{sql})", first + index))
            .collect();
        if self.json.is_some() {
            sources.push(format!(
                "json_populate_recordset(NULL::\"{table}\", ${}::json)",
                first + self.arrays.len()
            ));
        }
        // Each `unnest` gives one column, named by position ("#1", ...); the JSON gives the
        // table's columns under their own names.
        let aliases = if self.arrays.is_empty() {
            String::new()
        } else {
            let aliases: Vec<String> = (1..=self.arrays.len())
                .map(|index| format!("\"#{index}\""))
                .collect();
            format!("({})", aliases.join(", "))
        };
        let select = self
            .columns
            .iter()
            .map(|column| {
                let name = column.as_str();
                match self
                    .arrays
                    .iter()
                    .position(|(array, _, _)| array.as_str() == name)
                {
                    Some(index) => format!("r.\"#{}\" AS \"{name}\"", index + 1),
                    None => format!("r.\"{name}\""),
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let conflict = match &self.conflict {
            Conflict::Fail => String::new(),
            Conflict::Ignore(key) => format!(" ON CONFLICT ({}) DO NOTHING", names(key)),
            Conflict::Update(key, updated) => format!(
                " ON CONFLICT (\"{}\") DO UPDATE SET {}",
                key.as_str(),
                updated
                    .iter()
                    .map(|column| format!("\"{0}\" = EXCLUDED.\"{0}\"", column.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let returning = if self.returning.is_empty() {
            String::new()
        } else {
            format!(" RETURNING {}", self.returning)
        };
        // In the parameters' order: the rows come out of the ordered subquery as they went in.
        format!(
            "INSERT INTO \"{table}\" ({columns}) SELECT {columns} FROM (SELECT {select} FROM \
             {from}ROWS FROM ({}) WITH ORDINALITY AS r{aliases} ORDER BY r.ordinality) AS rows\
             {conflict}{returning}",
            sources.join(", ")
        )
    }

    /// This write as a statement that first makes the `held` writes, then runs the prefix (see
    /// [`RowsWrite::after`]) once every held write is done, then writes the rows.
    fn statement(self, held: Held) -> Statement {
        let count = held.writes.len();
        let first = held.params() + 1;
        let mut ctes = held.ctes();
        let mut from = "";
        if !self.prefix.is_empty() {
            // The prefix's single row comes from an aggregate over every held write's rows, so
            // it is computed only after all of them are written (an aggregate subquery is never
            // flattened away).
            let after_writes = match count {
                0 => String::new(),
                count => format!(
                    " FROM (SELECT count(*) FROM ({}) AS written) AS writes",
                    (1..=count)
                        .map(|index| format!("SELECT 1 FROM w{index}"))
                        .collect::<Vec<_>>()
                        .join(" UNION ALL ")
                ),
            };
            ctes.push(format!(
                "first AS MATERIALIZED ({}{after_writes})",
                self.prefix
            ));
            from = "first, ";
        }
        let with = if ctes.is_empty() {
            String::new()
        } else {
            format!("WITH {} ", ctes.join(", "))
        };
        let sql = format!("{with}{}", self.insert(first, from));
        let values = held.into_values().chain(self.into_values());
        Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
    }

    /// Writes the rows; returns what `RETURNING` names, one result per row written.
    pub(super) async fn run(
        self,
        db: &impl ConnectionTrait,
    ) -> Result<Vec<QueryResult>, StoreError> {
        self.run_after(Held::default(), db).await
    }

    /// Like [`RowsWrite::run`], in the same statement as the `held` writes and after them.
    pub(super) async fn run_after(
        self,
        held: Held,
        db: &impl ConnectionTrait,
    ) -> Result<Vec<QueryResult>, StoreError> {
        if self.columns.is_empty() {
            held.send(db).await?;
            return Ok(vec![]);
        }
        Ok(db.query_all_raw(self.statement(held)).await?)
    }

    /// Holds the write back to be sent with a later statement (see [`Held`]).
    pub(super) fn hold(mut self, held: &mut Held) {
        if self.columns.is_empty() {
            return;
        }
        // A CTE is read only through its `RETURNING`.
        if self.returning.is_empty() {
            self.returning = "1";
        }
        let insert = self.insert(held.params() + 1, "");
        held.writes.push((insert, self.into_values()));
    }
}

/// Writes held back to travel with a later statement of the same transaction as data-modifying
/// CTEs: a batch's write-back (users, accounts, reports, jobs) and its log append are one
/// statement, one round trip instead of one per table. Each write reads its rows from its own
/// parameter; all of them run to completion within the statement that carries them.
#[derive(Debug, Default)]
pub(super) struct Held {
    /// Each write's `INSERT` and its parameters (numbered after the earlier writes').
    writes: Vec<(String, Vec<Value>)>,
}

impl Held {
    /// Sends the held writes as a statement of their own; nothing if there are none.
    pub(super) async fn send(self, db: &impl ConnectionTrait) -> Result<(), StoreError> {
        if self.writes.is_empty() {
            return Ok(());
        }
        let ctes = self.ctes().join(", ");
        let statement = Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!("WITH {ctes} SELECT 1"),
            self.into_values(),
        );
        db.execute_raw(statement).await?;
        Ok(())
    }

    /// `wN AS (INSERT ...)` for the n-th write.
    fn ctes(&self) -> Vec<String> {
        self.writes
            .iter()
            .enumerate()
            .map(|(index, (insert, _))| format!("w{} AS ({insert})", index + 1))
            .collect()
    }

    /// How many parameters the writes take.
    fn params(&self) -> usize {
        self.writes.iter().map(|(_, values)| values.len()).sum()
    }

    /// The writes' parameters, in order.
    fn into_values(self) -> impl Iterator<Item = Value> {
        self.writes.into_iter().flat_map(|(_, values)| values)
    }
}

fn names<C: IdenStatic>(columns: &[C]) -> String {
    columns
        .iter()
        .map(|column| format!("\"{}\"", column.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The array type a `NOT NULL` column travels as, if it is one sqlx binds.
fn array_type(value: &Value) -> Option<(ArrayType, &'static str)> {
    Some(match value {
        Value::String(_) => (ArrayType::String, "text[]"),
        Value::Bytes(_) => (ArrayType::Bytes, "bytea[]"),
        Value::BigInt(_) => (ArrayType::BigInt, "int8[]"),
        Value::Int(_) => (ArrayType::Int, "int4[]"),
        Value::Bool(_) => (ArrayType::Bool, "bool[]"),
        Value::ChronoDateTimeUtc(_) => (ArrayType::ChronoDateTimeUtc, "timestamptz[]"),
        _ => return None,
    })
}

/// A NULL of one of the types [`array_type`] and [`json`] know.
fn is_null(value: &Value) -> bool {
    matches!(
        value,
        Value::String(None)
            | Value::Bytes(None)
            | Value::BigInt(None)
            | Value::Int(None)
            | Value::Bool(None)
            | Value::ChronoDateTimeUtc(None)
    )
}

/// A column value as `json_populate_recordset` reads it into the column's type.
fn json(value: &Value) -> Result<serde_json::Value, StoreError> {
    use serde_json::Value as Json;
    Ok(match value {
        Value::String(Some(text)) => Json::String(text.clone()),
        Value::BigInt(Some(n)) => Json::from(*n),
        Value::Int(Some(n)) => Json::from(*n),
        Value::Bool(Some(b)) => Json::Bool(*b),
        // bytea's hex input format.
        Value::Bytes(Some(bytes)) => Json::String(format!("\\x{}", hex::encode(bytes))),
        Value::ChronoDateTimeUtc(Some(at)) => {
            Json::String(at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        }
        null if is_null(null) => Json::Null,
        other => {
            return Err(StoreError::Corrupt {
                table: "-",
                detail: format!("no JSON form for the column value {other:?}"),
            });
        }
    })
}

/// `column IN (values)`. On PostgreSQL it is `column = ANY($1)` with one array parameter, so the
/// statement's text does not depend on how many values there are: sqlx prepares it once per
/// connection, where every list length would be another statement to prepare (one more round
/// trip) competing for the statement cache. SQLite keeps `IN`.
pub(super) fn one_of<C, T>(backend: DbBackend, column: C, values: Vec<T>) -> Expr
where
    C: ColumnTrait,
    T: Into<Value>,
    Vec<T>: Into<Value>,
{
    if backend == DbBackend::Postgres {
        Expr::col((column.entity_name(), column)).eq(PgFunc::any(Expr::val(values)))
    } else {
        column.is_in(values)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use sea_orm::ActiveValue::Set;

    use super::*;
    use crate::store::entities::delivery;

    fn deliveries(count: usize) -> Vec<delivery::ActiveModel> {
        (0..count)
            .map(|n| delivery::ActiveModel {
                body_sha256: Set(format!("sha-{n}")),
                body: Set(vec![0xff, n as u8, b'"', b'\\']),
                event_name: Set((n % 2 == 0).then(|| "accounts.connected".to_owned())),
                status: Set("applied".to_owned()),
                error: Set(None),
                received_at: Set(Utc.timestamp_opt(1_700_000_000 + n as i64, 0).unwrap()),
                ..Default::default()
            })
            .collect()
    }

    fn write(rows: &[delivery::ActiveModel]) -> RowsWrite<'static, delivery::Entity> {
        const KEY: [delivery::Column; 1] = [delivery::Column::BodySha256];
        RowsWrite::new(rows, Conflict::Ignore(&KEY)).unwrap()
    }

    #[test]
    fn the_statement_text_is_the_same_for_one_row_and_for_many() {
        assert_eq!(
            write(&deliveries(1)).insert(1, ""),
            write(&deliveries(37)).insert(1, "")
        );
    }

    #[test]
    fn not_null_columns_travel_as_binary_arrays_and_nullable_ones_as_json() {
        let rows = deliveries(3);
        let write = write(&rows);
        let sql = write.insert(1, "");
        for source in [
            "unnest($1::text[])",
            "unnest($2::bytea[])",
            "unnest($3::text[])",
            "unnest($4::timestamptz[])",
            "json_populate_recordset(NULL::\"deliveries\", $5::json)",
        ] {
            assert!(sql.contains(source), "{source} missing from {sql}");
        }
        let values = write.into_values();
        assert_eq!(values.len(), 5);
        let Value::Array(ArrayType::Bytes, Some(bodies)) = &values[1] else {
            panic!("the bodies are not a bytea array: {:?}", values[1]);
        };
        assert_eq!(bodies[2], Value::Bytes(Some(vec![0xff, 2, b'"', b'\\'])));
        let Value::String(Some(json)) = &values[4] else {
            panic!("the nullable columns are not JSON: {:?}", values[4]);
        };
        let json: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"event_name": "accounts.connected", "error": null},
                {"event_name": null, "error": null},
                {"event_name": "accounts.connected", "error": null},
            ])
        );
    }

    #[test]
    fn held_writes_number_their_parameters_after_the_earlier_ones() {
        let mut held = Held::default();
        write(&deliveries(2)).hold(&mut held);
        assert_eq!(held.params(), 5);
        let statement = write(&deliveries(2)).statement(held);
        assert!(statement.sql.starts_with("WITH w1 AS (INSERT"));
        assert!(statement.sql.contains("unnest($6::text[])"));
        assert!(statement.sql.contains("$10::json"));
        assert_eq!(statement.values.map(|values| values.0.len()), Some(10));
    }
}
