//! The one clock of every role: the server (expiries, sessions, rate-limit
//! windows, audit times), the connector (token checks) and the CLI (the
//! exec plugin's token cache) all ask it for "now", so each sees one time
//! and the tests have one seam to move it.
//!
//! The seam: in debug builds (what `cargo test` runs), a whole number of
//! seconds is added to the system time: the number in the file named by
//! `INFRA_TEST_CLOCK_FILE` (read on every call, so a test moves the clock
//! of a server it already started), else the one in
//! `INFRA_TEST_CLOCK_OFFSET_SECS`. An integration test runs the real binary
//! with a clock that is, say, two minutes slow, or lets an hour pass
//! without waiting for it. Release builds read neither: a person cannot
//! turn it on by accident, and the warm path does not pay for it.

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

/// The local time as a date.
pub fn now_utc() -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_millis()) * 1_000_000)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
}

/// Why a token's time claims do not hold now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenTime {
    /// Past `exp` (by this many seconds) plus the leeway.
    Expired(i64),
    /// Before `nbf` (or `iat`) minus the leeway.
    NotYetValid,
}

/// Checks a token's `exp` and `nbf` against this clock's `now`, allowing
/// `leeway` seconds of skew either way (jsonwebtoken's own check reads the
/// system time, past the test seam, so the roles call this instead).
pub fn check_token_times(
    exp: Option<i64>,
    nbf: Option<i64>,
    now: i64,
    leeway: u64,
) -> Result<(), TokenTime> {
    let leeway = i64::try_from(leeway).unwrap_or(i64::MAX);
    if let Some(exp) = exp
        && now.saturating_sub(leeway) >= exp
    {
        return Err(TokenTime::Expired(now - exp));
    }
    if let Some(nbf) = nbf
        && nbf > now.saturating_add(leeway)
    {
        return Err(TokenTime::NotYetValid);
    }
    Ok(())
}

#[cfg(debug_assertions)]
fn offset_secs() -> i64 {
    let parse = |v: &str| v.trim().parse::<i64>().ok();
    // A running server or connector: the file's number, read every time,
    // so that a test moves the clock of a process it already started.
    if let Some(file) = std::env::var_os("INFRA_TEST_CLOCK_FILE") {
        return std::fs::read_to_string(file)
            .ok()
            .and_then(|v| parse(&v))
            .unwrap_or(0);
    }
    std::env::var("INFRA_TEST_CLOCK_OFFSET_SECS")
        .ok()
        .and_then(|v| parse(&v))
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

    #[test]
    fn token_times() {
        assert_eq!(check_token_times(Some(100), None, 129, 30), Ok(()));
        assert_eq!(
            check_token_times(Some(100), None, 130, 30),
            Err(TokenTime::Expired(30))
        );
        assert_eq!(check_token_times(None, Some(130), 100, 30), Ok(()));
        assert_eq!(
            check_token_times(None, Some(131), 100, 30),
            Err(TokenTime::NotYetValid)
        );
    }
}
