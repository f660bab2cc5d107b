//! This machine's clock, as the exec plugin's token cache reads it: one
//! function, so that the whole plugin (warm path, cold path, what it writes
//! into the cache) sees one "now", and the tests have one seam to move it.
//!
//! The seam: in debug builds (what `cargo test` runs), the whole number of
//! seconds in `INFRA_TEST_CLOCK_OFFSET_SECS` is added to the system time,
//! so an integration test can run the real binary with a clock that is,
//! say, two minutes slow, or let minutes pass without waiting for them.
//! Release builds do not read the variable at all: a person cannot turn it
//! on by accident, and the warm path does not pay for it.

/// The local time, milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    let system = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    system.saturating_add(offset_secs().saturating_mul(1000))
}

/// The local time, whole seconds since the Unix epoch.
pub fn now() -> i64 {
    now_millis().div_euclid(1000)
}

#[cfg(debug_assertions)]
fn offset_secs() -> i64 {
    std::env::var_os("INFRA_TEST_CLOCK_OFFSET_SECS")
        .and_then(|v| v.to_str()?.trim().parse::<i64>().ok())
        .unwrap_or(0)
}

#[cfg(not(debug_assertions))]
fn offset_secs() -> i64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_follow_milliseconds() {
        let (ms, s) = (now_millis(), now());
        assert!((s - ms / 1000).abs() <= 1, "{ms} {s}");
        // Some time after 2020.
        assert!(s > 1_577_836_800, "{s}");
    }
}
