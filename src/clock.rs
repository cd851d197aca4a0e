//! Wall-clock time as vigil writes it: Unix time in seconds (a fraction for
//! sub-second precision; the unit of every time column, `ts` and
//! `received_at`) or in milliseconds.
//!
//! One place reads `SystemTime`, so a clock before 1970 (a broken RTC on a
//! fresh boot) is handled once: it reads as 0 rather than panicking.
//! Durations and deadlines use `Instant`, never this clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time now, in seconds with a fraction.
pub fn unix_secs() -> f64 {
    since_epoch().as_secs_f64()
}

/// Unix time now, in whole milliseconds.
pub fn unix_ms() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

/// Unix time now, in seconds rounded down to the millisecond: what the
/// agent puts in `ts`, so a message's text stays short.
pub fn unix_secs_ms() -> f64 {
    unix_ms() as f64 / 1000.0
}

fn since_epoch() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readings_agree() {
        let secs = unix_secs();
        let ms = unix_ms();
        let rounded = unix_secs_ms();
        // Well after 2020, and the three within a second of each other.
        assert!(secs > 1.6e9, "{secs}");
        assert!((ms as f64 / 1000.0 - secs).abs() < 1.0);
        assert!((rounded - secs).abs() < 1.0);
        assert_eq!((rounded * 1000.0).fract(), 0.0);
    }
}
