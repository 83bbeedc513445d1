//! Injectable time. Everything the models stamp (event times, `projected_at`,
//! row `updated_at`) comes from a `Clock`, so the harness controls it.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use std::sync::Mutex;

/// A source of the current UTC time, at microsecond precision like the
/// runtime's `DateTime.utc_now()`.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock, truncated to microseconds.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        truncate_to_micros(Utc::now())
    }
}

/// A clock that only moves when told to; every call to `now` advances it by
/// `tick` so that successive stamps differ, as they would in real time.
#[derive(Debug)]
pub struct ManualClock {
    state: Mutex<(DateTime<Utc>, TimeDelta)>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self::with_tick(start, TimeDelta::microseconds(1))
    }

    pub fn with_tick(start: DateTime<Utc>, tick: TimeDelta) -> Self {
        ManualClock {
            state: Mutex::new((truncate_to_micros(start), tick)),
        }
    }

    /// Moves the clock forward (or back: clocks of real nodes skew).
    pub fn advance(&self, by: TimeDelta) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        state.0 += by;
    }

    /// The time the next `now` will read, without moving the clock: so
    /// that a caller can compute with it and leave every stamp as it was.
    pub fn peek(&self) -> DateTime<Utc> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .0
    }

    pub fn set(&self, to: DateTime<Utc>) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        state.0 = truncate_to_micros(to);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let (now, tick) = *state;
        state.0 = now + tick;
        now
    }
}

pub(crate) fn truncate_to_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    time.duration_trunc(TimeDelta::microseconds(1))
        .unwrap_or(time)
}

/// `DateTime.to_iso8601` of a µs UTC time: `YYYY-MM-DDTHH:MM:SS.ffffffZ`
/// (spec §2.6).
pub fn iso8601(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_ticks_and_advances() {
        let start = DateTime::parse_from_rfc3339("2026-02-19T20:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = ManualClock::new(start);
        assert_eq!(iso8601(clock.now()), "2026-02-19T20:00:00.000000Z");
        assert_eq!(iso8601(clock.now()), "2026-02-19T20:00:00.000001Z");
        clock.advance(TimeDelta::seconds(60));
        assert_eq!(iso8601(clock.peek()), "2026-02-19T20:01:00.000002Z");
        assert_eq!(iso8601(clock.now()), "2026-02-19T20:01:00.000002Z");
    }
}
