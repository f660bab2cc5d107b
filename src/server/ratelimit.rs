//! Who may try to log in again, and when: the limits on failed logins and
//! on the other things strangers can do without a key (device codes, user
//! codes).
//!
//! Failures are counted per *source* (the client's address; for IPv6 its
//! /64, because whoever has one address of a /64 usually has all 2^64 of
//! them) and, where the login names one, per *account at that source*.
//! Never per provider or per server: what one source does must not stop
//! another source's logins. Past a number of free failures each further one
//! doubles the wait, up to a cap; a source that keeps failing keeps its
//! count, and one that stays quiet for [`FORGET_AFTER_MS`] starts afresh. A
//! success clears the count of that account at that source.
//!
//! Passwords can be guessed from many addresses at once, so a user name
//! also has a count across all sources. A count everyone can raise is a
//! lockout everyone can cause, so that one is kept loose: it only stops
//! sources that have not signed in as that user in the last 30 days, for
//! at most [`ACCOUNT_WIDE_WINDOW_MS`], and it is set above what a single
//! source can reach (its own limits stop it first), so a flood from one
//! address never locks anyone out. Access keys and machine identities'
//! JWTs cannot be guessed (random secrets, signatures), so they have no
//! such count: a stranger could only use it to lock out a pipeline.
//!
//! The counters live in the store (`rate_limits`), so every replica sees
//! the same ones: a check is one primary-key lookup, a failure an upsert per
//! counter. Rejected attempts are not counted (they cost nothing), so the
//! back-off grows only with attempts that were actually tried.

use std::net::{IpAddr, Ipv6Addr};

use axum::http::StatusCode;
use sha2::{Digest, Sha256};

use crate::server::AppState;
use crate::server::error::{ApiError, ApiResult};
use crate::server::store::{self, RateCount, Store, Window};

/// A source (or account at a source) that has been quiet this long starts
/// afresh.
pub const FORGET_AFTER_MS: i64 = 15 * 60 * 1000;
/// The first wait after the free failures; it doubles with each further one
/// (1 s, 2 s, 4 s, …) …
const BACKOFF_FIRST_MS: i64 = 1000;
/// … up to this (from the 10th failure past the free ones on).
const BACKOFF_CAP_MS: i64 = 5 * 60 * 1000;

/// Free failed logins of people (password, access key, identity provider)
/// per source: generous, because an office or a carrier-grade NAT is one
/// source.
const PERSON_FREE_PER_SOURCE: u64 = 20;
/// Free failed logins per account (user name or access key) at one source.
const PERSON_FREE_PER_ACCOUNT: u64 = 5;
/// Failed machine-identity logins per source: a CI egress address serves
/// many pipelines, and a JWT cannot be guessed, so more room than people.
const MACHINE_FREE_PER_SOURCE: u64 = 60;
/// Failed machine-identity logins per identity at one source.
const MACHINE_FREE_PER_ACCOUNT: u64 = 20;

/// Failed password logins as one user, from all sources, within
/// [`ACCOUNT_WIDE_WINDOW_MS`] (counted from the first), past which sources that
/// have not signed in as the user lately wait for the window to end. One
/// source can add at most about 16 in that time (5 free, then 1 s, 2 s, …),
/// so it takes several sources to get here.
const ACCOUNT_WIDE_MAX: u64 = 50;
const ACCOUNT_WIDE_WINDOW_MS: i64 = 15 * 60 * 1000;
/// How long a source stays "one this user signed in from".
const KNOWN_SOURCE_MS: i64 = 30 * 86_400 * 1000;

/// Repeated failures from one source are one audit entry per this window.
pub const AUDIT_REPEAT_WINDOW_MS: i64 = 60 * 60 * 1000;

/// The rate-limit key of a client address: an IPv4 address as it is (also
/// when mapped into IPv6), an IPv6 address as its /64 (`2001:db8:1:2::/64`),
/// anything else (no address known) as given.
pub fn source(addr: &str) -> String {
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{}/64", Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        Err(_) => addr.to_string(),
    }
}

/// The account a login names, if any.
#[derive(Debug, Clone, Copy)]
pub enum Account<'a> {
    /// Nothing known before the attempt (an identity provider's code, a
    /// malformed key, an identity that does not exist).
    None,
    /// A user name, with a password: guessable, so also counted across sources.
    User(&'a str),
    /// An access key, by its id.
    Key(&'a str),
    /// A machine identity: its id and, for messages, its name.
    Identity { id: &'a str, name: &'a str },
}

/// Which login limits apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Person,
    Machine,
}

/// A login attempt as the limits see it.
#[derive(Debug, Clone)]
pub struct Attempt<'a> {
    kind: Kind,
    account: Account<'a>,
    /// The client's address, as it came.
    pub addr: &'a str,
    /// Its rate-limit key, see [`source`]; also what repeated failures are
    /// audited under.
    pub source: String,
}

/// One counter an attempt is held against.
#[derive(Debug, Clone)]
struct Counter {
    key: String,
    rule: Rule,
    /// Named in the 429.
    what: String,
    /// A success clears it (the account's count at this source).
    cleared_by_success: bool,
}

#[derive(Debug, Clone, Copy)]
enum Rule {
    /// `free` failures, then growing waits; forgotten after a quiet spell.
    Backoff { free: u64 },
    /// At most `max` failures per window from the first, unless the
    /// source is known to the account (`known` counter present).
    AccountWide { max: u64 },
}

fn key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

impl<'a> Attempt<'a> {
    /// A person's login (password, access key, identity provider).
    pub fn person(addr: &'a str, account: Account<'a>) -> Self {
        Attempt {
            kind: Kind::Person,
            account,
            addr,
            source: source(addr),
        }
    }

    /// A machine identity's login with its JWT.
    pub fn machine(addr: &'a str, account: Account<'a>) -> Self {
        Attempt {
            kind: Kind::Machine,
            account,
            addr,
            source: source(addr),
        }
    }

    fn counters(&self) -> Vec<Counter> {
        let (kind, free_source, free_account) = match self.kind {
            Kind::Person => ("person", PERSON_FREE_PER_SOURCE, PERSON_FREE_PER_ACCOUNT),
            Kind::Machine => ("machine", MACHINE_FREE_PER_SOURCE, MACHINE_FREE_PER_ACCOUNT),
        };
        let mut out = vec![Counter {
            key: key(&["source", kind, &self.source]),
            rule: Rule::Backoff { free: free_source },
            what: "too many failed logins from your address".to_string(),
            // Or one's own account would reset the count of guesses at others.
            cleared_by_success: false,
        }];
        let (account_kind, id, label) = match self.account {
            Account::None => return out,
            Account::User(name) => ("user", name, format!("{name:?}")),
            Account::Key(id) => ("key", id, format!("access key {id}")),
            Account::Identity { id, name } => ("identity", id, format!("identity {name:?}")),
        };
        out.push(Counter {
            key: key(&["account", account_kind, id, &self.source]),
            rule: Rule::Backoff { free: free_account },
            what: format!("too many failed logins as {label} from your address"),
            cleared_by_success: true,
        });
        if let Account::User(name) = self.account {
            out.push(Counter {
                key: key(&["account-wide", "user", name]),
                rule: Rule::AccountWide {
                    max: ACCOUNT_WIDE_MAX,
                },
                what: format!(
                    "too many failed logins as {label} from many addresses (sign-ins from an \
                     address that signed in as {label} before are still let through)"
                ),
                cleared_by_success: false,
            });
        }
        out
    }

    /// The mark of a source that signed in as the user.
    fn known_key(&self) -> Option<String> {
        match self.account {
            Account::User(name) => Some(key(&["known", "user", name, &self.source])),
            _ => None,
        }
    }
}

/// The wait after `failures` failures with `free` of them free: none below
/// `free`, then 1 s doubling per further failure, at most 5 minutes.
pub fn backoff_ms(failures: u64, free: u64) -> i64 {
    if failures < free {
        return 0;
    }
    let doublings = (failures - free).min(30) as u32;
    BACKOFF_FIRST_MS
        .saturating_mul(1i64 << doublings)
        .min(BACKOFF_CAP_MS)
}

/// Until when the counters hold the attempt back (the latest of them), and
/// which one that is; `None` when it may go ahead.
fn held_until<'c>(
    counters: &'c [Counter],
    live: &[RateCount],
    known: bool,
    now_ms: i64,
) -> Option<(i64, &'c Counter)> {
    let mut worst: Option<(i64, &Counter)> = None;
    for c in counters {
        let Some(count) = live.iter().find(|r| r.key == c.key) else {
            continue;
        };
        let until = match c.rule {
            Rule::Backoff { free } if count.hits >= free => {
                count.last_ms + backoff_ms(count.hits, free)
            }
            Rule::AccountWide { max } if count.hits >= max && !known => count.expires_ms,
            _ => continue,
        };
        if until > now_ms && worst.is_none_or(|(w, _)| until > w) {
            worst = Some((until, c));
        }
    }
    worst
}

/// A 429 saying when to try again, with `Retry-After`.
pub fn too_many(what: &str, until_ms: i64, now_ms: i64) -> ApiError {
    let secs = ((until_ms - now_ms + 999) / 1000).max(1) as u64;
    let mut err = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "{what}; try again in {secs} second{}",
            if secs == 1 { "" } else { "s" }
        ),
    );
    err.retry_after = Some(secs);
    err
}

/// Refuses the attempt (429) while a limit holds it back.
pub async fn check(state: &AppState, a: &Attempt<'_>) -> ApiResult<()> {
    let now = store::now_ms();
    let counters = a.counters();
    let mut keys: Vec<String> = counters.iter().map(|c| c.key.clone()).collect();
    let known_key = a.known_key();
    keys.extend(known_key.clone());
    let live = state.store.rate_counts(&keys, now).await?;
    let known = known_key.is_some_and(|k| live.iter().any(|r| r.key == k));
    match held_until(&counters, &live, known, now) {
        None => Ok(()),
        Some((until, c)) => {
            state.metrics.login("any", "rate_limited");
            Err(too_many(&c.what, until, now))
        }
    }
}

/// Counts a failed attempt against each of its counters.
pub async fn failed(store: &Store, a: &Attempt<'_>) -> store::Result<()> {
    let now = store::now_ms();
    for c in a.counters() {
        let window = match c.rule {
            Rule::Backoff { .. } => Window::Quiet(FORGET_AFTER_MS),
            Rule::AccountWide { .. } => Window::Fixed(ACCOUNT_WIDE_WINDOW_MS),
        };
        store.rate_hit(&c.key, now, window).await?;
    }
    Ok(())
}

/// A successful login: the account's count at this source is cleared, and
/// a user's source is remembered as one they sign in from.
pub async fn succeeded(store: &Store, a: &Attempt<'_>) -> store::Result<()> {
    let now = store::now_ms();
    for c in a.counters() {
        if c.cleared_by_success {
            store.rate_clear(&c.key).await?;
        }
    }
    if let Some(k) = a.known_key() {
        store.rate_mark(&k, now, now + KNOWN_SOURCE_MS).await?;
    }
    Ok(())
}

/// A plain limit on something strangers may do from one source: at most
/// `max` times per window, the window counted from the first time.
#[derive(Debug, Clone, Copy)]
pub struct PerSource {
    /// What is counted (part of the key).
    pub what: &'static str,
    pub max: u64,
    pub window_ms: i64,
}

impl PerSource {
    fn key(&self, addr: &str) -> String {
        key(&["per-source", self.what, &source(addr)])
    }

    /// Until when `addr` must wait, if it must.
    pub async fn held_until(&self, store: &Store, addr: &str) -> store::Result<Option<i64>> {
        let now = store::now_ms();
        let live = store.rate_counts(&[self.key(addr)], now).await?;
        Ok(live
            .first()
            .filter(|c| c.hits >= self.max)
            .map(|c| c.expires_ms))
    }

    /// Counts one more time.
    pub async fn hit(&self, store: &Store, addr: &str) -> store::Result<()> {
        store
            .rate_hit(
                &self.key(addr),
                store::now_ms(),
                Window::Fixed(self.window_ms),
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_sources_are_their_64() {
        assert_eq!(source("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(source("2001:db8:1:2:ffff::1"), "2001:db8:1:2::/64");
        assert_eq!(source("2001:db8:1:3::1"), "2001:db8:1:3::/64");
        assert_eq!(source("::1"), "::/64");
        assert_eq!(source("fe80::1"), "fe80::/64");
    }

    #[test]
    fn ipv4_sources_are_the_address() {
        assert_eq!(source("192.0.2.7"), "192.0.2.7");
        assert_eq!(source("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(source(""), "");
    }

    #[test]
    fn every_address_of_a_64_shares_one_counter() {
        let a = Attempt::person("2001:db8:1:2::1", Account::User("alice"));
        let b = Attempt::person("2001:db8:1:2:dead:beef:0:1", Account::User("alice"));
        let c = Attempt::person("2001:db8:1:3::1", Account::User("alice"));
        let keys = |x: &Attempt| x.counters().into_iter().map(|c| c.key).collect::<Vec<_>>();
        assert_eq!(keys(&a), keys(&b));
        assert_ne!(keys(&a)[0], keys(&c)[0]);
        assert_ne!(keys(&a)[1], keys(&c)[1]);
        // The user's count across sources is one.
        assert_eq!(keys(&a)[2], keys(&c)[2]);
    }

    #[test]
    fn the_wait_doubles_up_to_the_cap() {
        assert_eq!(backoff_ms(4, 5), 0);
        assert_eq!(backoff_ms(5, 5), 1000);
        assert_eq!(backoff_ms(6, 5), 2000);
        assert_eq!(backoff_ms(7, 5), 4000);
        assert_eq!(backoff_ms(13, 5), 256_000);
        assert_eq!(backoff_ms(14, 5), BACKOFF_CAP_MS);
        assert_eq!(backoff_ms(u64::MAX, 5), BACKOFF_CAP_MS);
    }

    /// The account-wide count must be out of reach of one source: the most
    /// one source can add to it in its window, trying again the moment each
    /// wait ends, is below the limit.
    #[test]
    fn one_source_cannot_reach_the_account_wide_limit() {
        let mut t = 0;
        let mut failures = 0u64;
        while t < ACCOUNT_WIDE_WINDOW_MS {
            failures += 1;
            t += backoff_ms(failures, PERSON_FREE_PER_ACCOUNT);
        }
        assert!(failures < ACCOUNT_WIDE_MAX, "{failures}");
    }

    #[test]
    fn held_until_names_the_longest_wait() {
        let a = Attempt::person("192.0.2.7", Account::User("alice"));
        let counters = a.counters();
        let now = 1_000_000;
        let live = |hits: [u64; 3]| -> Vec<RateCount> {
            counters
                .iter()
                .zip(hits)
                .map(|(c, hits)| RateCount {
                    key: c.key.clone(),
                    hits,
                    last_ms: now - 500,
                    expires_ms: now + 60_000,
                })
                .collect()
        };
        assert!(held_until(&counters, &live([19, 4, 49]), false, now).is_none());
        let (until, c) = held_until(&counters, &live([19, 6, 49]), false, now).unwrap();
        assert_eq!(until, now - 500 + 2000);
        assert!(
            c.what.contains("as \"alice\" from your address"),
            "{}",
            c.what
        );
        let (until, c) = held_until(&counters, &live([19, 6, 50]), false, now).unwrap();
        assert_eq!(until, now + 60_000);
        assert!(c.what.contains("many addresses"), "{}", c.what);
        // A source the user signed in from is not held by the account-wide count.
        let (until, _) = held_until(&counters, &live([19, 6, 50]), true, now).unwrap();
        assert_eq!(until, now - 500 + 2000);
        // A wait that is over holds nothing.
        assert!(held_until(&counters, &live([19, 5, 49]), false, now + 1000).is_none());
    }
}
