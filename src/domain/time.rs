//! Instants as this service keeps them: UTC at microsecond precision (what PostgreSQL stores, so
//! SQLite and PostgreSQL return the same instant), within the range a protobuf `Timestamp` can
//! carry (years 0001-9999), never a leap second. Argyle's times are checked at the edge
//! ([`argyle_time`]); the service's own come from [`now`].

use chrono::{DateTime, Datelike, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Deserializer};

/// The current time, truncated to microseconds.
pub fn now() -> DateTime<Utc> {
    truncate(Utc::now())
}

/// `at` without its sub-microsecond part.
pub fn truncate(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(at)
}

/// Why an instant is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadInstant {
    #[error("leap seconds (23:59:60) are not accepted")]
    LeapSecond,
    #[error("outside the years 0001-9999")]
    OutOfRange,
}

/// Checks that `at` can be stored and sent as a protobuf `Timestamp`, and truncates it to
/// microseconds.
pub fn checked(at: DateTime<Utc>) -> Result<DateTime<Utc>, BadInstant> {
    if at.timestamp_subsec_nanos() >= 1_000_000_000 {
        return Err(BadInstant::LeapSecond);
    }
    if !(1..=9999).contains(&at.year()) {
        return Err(BadInstant::OutOfRange);
    }
    Ok(truncate(at))
}

/// Deserializes an optional RFC 3339 time from an Argyle payload, refusing values no
/// `Timestamp` can hold (with serde's path, the error names the field).
pub fn argyle_time<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    Option::<DateTime<Utc>>::deserialize(deserializer)?
        .map(checked)
        .transpose()
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("valid RFC 3339")
            .with_timezone(&Utc)
    }

    #[test]
    fn instants_are_kept_at_microsecond_precision() {
        let at = checked(parse("2024-01-08T12:58:06.123456789Z")).unwrap();
        assert_eq!(at.timestamp_subsec_nanos(), 123_456_000);
        assert_eq!(now().timestamp_subsec_nanos() % 1000, 0);
    }

    #[test]
    fn leap_seconds_and_years_outside_0001_to_9999_are_refused() {
        assert_eq!(
            checked(parse("2016-12-31T23:59:60Z")),
            Err(BadInstant::LeapSecond)
        );
        assert_eq!(
            checked(parse("0000-12-31T23:59:59Z")),
            Err(BadInstant::OutOfRange)
        );
        let far = DateTime::from_timestamp(253_402_300_800, 0).unwrap(); // 10000-01-01
        assert_eq!(checked(far), Err(BadInstant::OutOfRange));
        assert!(checked(parse("0001-01-01T00:00:00Z")).is_ok());
        assert!(checked(parse("9999-12-31T23:59:59.999999Z")).is_ok());
    }
}
