//! Time on the page: instants are stored as UTC Unix milliseconds and shown
//! in the operator's time zone (IANA name, daylight-saving aware), the way
//! Statuspage prints them: ISO 8601 with milliseconds and the local offset.

use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, ToSpan, Zoned};

use crate::StatusError;

/// The page's time zone.
#[derive(Debug, Clone)]
pub struct PageClock {
    tz: TimeZone,
    name: String,
}

impl PageClock {
    /// The zone by IANA name (`Etc/UTC`, `Europe/Berlin`…).
    pub fn new(name: &str) -> Result<Self, StatusError> {
        let tz = TimeZone::get(name).map_err(|e| {
            StatusError::invalid(
                "status.time_zone",
                format!("`{name}` is not a known time zone: {e}"),
            )
        })?;
        Ok(Self {
            tz,
            name: name.to_string(),
        })
    }

    /// UTC.
    pub fn utc() -> Self {
        Self {
            tz: TimeZone::UTC,
            name: "Etc/UTC".into(),
        }
    }

    /// The IANA name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn zoned(&self, ms: i64) -> Option<Zoned> {
        Timestamp::from_millisecond(ms)
            .ok()
            .map(|t| t.to_zoned(self.tz.clone()))
    }

    /// `2022-02-15T13:37:37.407-08:00`.
    pub fn format(&self, ms: i64) -> String {
        self.zoned(ms).map_or_else(String::new, |z| {
            z.strftime("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string()
        })
    }

    /// `15 Feb 2022, 13:37 PST` for people.
    pub fn human(&self, ms: i64) -> String {
        self.zoned(ms).map_or_else(String::new, |z| {
            z.strftime("%-d %b %Y, %H:%M %Z").to_string()
        })
    }

    /// `2022-02-15`: the local date.
    pub fn date(&self, ms: i64) -> String {
        self.zoned(ms)
            .map_or_else(String::new, |z| z.strftime("%Y-%m-%d").to_string())
    }

    /// An instant from RFC 3339. A time with an offset (or `Z`) is exact; a
    /// local time without one is read in the page's zone, and refused when
    /// daylight saving makes it not exist (the spring gap) or happen twice
    /// (the autumn fold), because guessing would move a maintenance by an hour.
    pub fn parse(&self, field: &str, s: &str) -> Result<i64, StatusError> {
        if let Ok(t) = s.parse::<Timestamp>() {
            return Ok(t.as_millisecond());
        }
        let local: DateTime = s.parse().map_err(|_| {
            StatusError::invalid(
                field,
                format!("`{s}` is not an RFC 3339 time like 2026-03-08T01:30:00Z or a local time like 2026-03-08T01:30:00"),
            )
        })?;
        match self.tz.to_ambiguous_zoned(local).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset
                .to_timestamp(local)
                .map(Timestamp::as_millisecond)
                .map_err(|e| StatusError::invalid(field, e.to_string())),
            AmbiguousOffset::Gap { .. } => Err(StatusError::invalid(
                field,
                format!(
                    "`{s}` does not exist in {} (the clocks skip it for daylight saving); give an offset",
                    self.name
                ),
            )),
            AmbiguousOffset::Fold { .. } => Err(StatusError::invalid(
                field,
                format!(
                    "`{s}` happens twice in {} (the clocks go back for daylight saving); give an offset",
                    self.name
                ),
            )),
        }
    }

    /// The last `n` local days up to and including the one holding `now`,
    /// oldest first, as `(date, start_ms, end_ms)`. Days across a
    /// daylight-saving change are 23 or 25 hours long.
    pub fn days(&self, now: i64, n: usize) -> Vec<(String, i64, i64)> {
        let Some(today) = self.zoned(now).and_then(|z| z.start_of_day().ok()) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(n);
        let mut start = today;
        for _ in 0..n {
            let Ok(end) = start.checked_add(1.day()) else {
                break;
            };
            let end = end.start_of_day().unwrap_or(end);
            out.push((
                start.strftime("%Y-%m-%d").to_string(),
                start.timestamp().as_millisecond(),
                end.timestamp().as_millisecond(),
            ));
            let Ok(prev) = start.checked_sub(1.day()) else {
                break;
            };
            start = prev.start_of_day().unwrap_or(prev);
        }
        out.reverse();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_statuspage() {
        let c = PageClock::new("America/Tijuana").unwrap();
        // 2022-02-15T21:37:37.407Z is 13:37:37.407 PST.
        assert_eq!(c.format(1_644_961_057_407), "2022-02-15T13:37:37.407-08:00");
        assert_eq!(PageClock::utc().format(0), "1970-01-01T00:00:00.000+00:00");
    }

    #[test]
    fn unknown_zone_names_the_key() {
        let e = PageClock::new("Mars/Olympus").unwrap_err().to_string();
        assert!(
            e.contains("status.time_zone") && e.contains("Mars/Olympus"),
            "{e}"
        );
    }
}
