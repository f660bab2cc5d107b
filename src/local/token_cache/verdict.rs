//! Whether a cached token may be served ([`judge`]): it must be valid for
//! longer than the margin by this machine's clock, and the caller must not
//! be kubectl asking again for a token the cluster just refused (the 401
//! retry). The answer is a [`Verdict`].

use super::format::{Cached, Entry, How, Served};

/// What to do with a cache entry (see [`judge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it out; `mark`: record this as its receiver first.
    Serve { mark: Option<Served> },
    /// Expired, inside the margin, or of unknown age: refresh.
    Stale,
    /// The caller already got this very token from the cache and asks
    /// again: the cluster refused it. Refresh, and do not hand it out again.
    Rejected,
}

/// Whether a token that expires at `expires` and was minted at `minted`
/// (both local Unix seconds), last handed to `served`, may go to a caller
/// whose parent process is `parent` (running the program `image()`, asked
/// only when needed), at local time `now`, with `margin` seconds to spare.
///
/// The 401 retry. kubectl (client-go) keeps the credential in memory and
/// runs the plugin again only when its `expirationTimestamp` has passed,
/// or right after a request was answered 401 (client-go's exec
/// authenticator, `maybeRefreshCreds`); since v1beta1 it passes nothing that
/// tells the two apart. So when the same kubectl process (the plugin's
/// parent, still running the same program) asks again for a token it got
/// *from the cache*, and the token has not expired, the cluster refused it
/// (a clock far off, a key the connector does not know yet, ...): serving
/// it again would only get another 401, so it is [`Verdict::Rejected`] and
/// the caller mints a new one, recorded as [`How::Forced`]. The same holds
/// for a token minted for that very kubectl (its first call found no token
/// it could use): asked again, it was refused. Parallel kubectl calls are
/// different processes and are not mistaken for a retry; neither are calls
/// in a row from a script, each a new kubectl, nor a process that `exec`ed
/// another program since (see [`process_image`]).
///
/// What bounds the cost of a wrong guess: a token minted in place of a
/// refused one is not suspected by anyone, so there is at most one forced
/// refresh per token lifetime, whatever the callers do (a test or a
/// benchmark running the plugin again and again from one process mints
/// once more, then is served). This matters, as some clients ask
/// twice while their token is fine: the Google Cloud SDK's kubectl keeps an
/// HTTP cache of its version check and replays a 401 it once got there, so
/// each such kubectl asks twice, "after a 401"; the Python `kubernetes`
/// client runs the plugin twice in every process. A token minted in place
/// of a refused one that is refused too is refused for a reason a new one
/// would not fix either.
///
/// Limits: only the last receiver is remembered, so with kubectl calls
/// interleaved a refused token may be served once more before the retry is
/// recognised (on the next 401); where the program cannot be told (`image`
/// 0: not Linux), no call is taken for a retry.
///
/// [`process_image`]: super::process_image
pub fn judge(
    expires: i64,
    minted: i64,
    served: Served,
    now: i64,
    margin: i64,
    parent: u32,
    image: impl FnOnce() -> u32,
) -> Verdict {
    if now < minted || expires.saturating_sub(now) <= margin {
        return Verdict::Stale;
    }
    let mine = served.parent == parent;
    match served.how {
        _ if parent == 0 => return Verdict::Serve { mark: None },
        How::Forced => return Verdict::Serve { mark: None },
        How::Minted | How::Cache => {}
    }
    let image = image();
    if mine && image != 0 && served.image == image {
        return Verdict::Rejected;
    }
    // Minted for this parent when its program could not be told: as before.
    if mine && served.how == How::Minted && served.image == 0 {
        return Verdict::Serve { mark: None };
    }
    Verdict::Serve {
        mark: Some(Served::cache(parent, image)),
    }
}

impl Entry<'_> {
    /// See [`judge`].
    pub fn judge(
        &self,
        now: i64,
        margin: i64,
        parent: u32,
        image: impl FnOnce() -> u32,
    ) -> Verdict {
        judge(
            self.expires,
            self.minted,
            self.served,
            now,
            margin,
            parent,
            image,
        )
    }
}

impl Cached {
    /// See [`judge`].
    pub fn judge(
        &self,
        now: i64,
        margin: i64,
        parent: u32,
        image: impl FnOnce() -> u32,
    ) -> Verdict {
        judge(
            self.expires,
            self.minted,
            self.served,
            now,
            margin,
            parent,
            image,
        )
    }

    /// Not expired at `now`, by what this machine can tell.
    pub fn valid(&self, now: i64) -> bool {
        self.minted <= now && now < self.expires
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::cached;
    use super::*;

    #[test]
    fn judging_freshness() {
        let v = |now: i64, margin: i64| {
            judge(1000, 700, Served::minted(9, false), now, margin, 9, || 1)
        };
        let serve = Verdict::Serve { mark: None };
        assert_eq!(v(900, 60), serve);
        assert_eq!(v(940, 60), Verdict::Stale);
        assert_eq!(v(941, 60), Verdict::Stale);
        assert_eq!(v(700, 60), serve);
        // The clock went back past the mint: how old the token is, is unknown.
        assert_eq!(v(699, 60), Verdict::Stale);
        assert_eq!(v(700, i64::MAX), Verdict::Stale);
        let c = cached(1000, 700, "-", Served::minted(9, false));
        assert!(c.valid(700) && c.valid(999));
        assert!(!c.valid(1000) && !c.valid(699));
    }

    #[test]
    fn judging_the_401_retry() {
        const KUBECTL: u32 = 0x1111;
        const OTHER: u32 = 0x2222;
        let j = |served: Served, parent: u32, image: u32| {
            judge(1000, 700, served, 800, 60, parent, || image)
        };
        let mark = |parent, image| Verdict::Serve {
            mark: Some(Served::cache(parent, image)),
        };
        // kubectl 42 got the token from the cache and asks again: refused.
        assert_eq!(
            j(Served::cache(42, KUBECTL), 42, KUBECTL),
            Verdict::Rejected
        );
        // Another kubectl (parallel, or the next in a script): served, noted.
        assert_eq!(
            j(Served::cache(42, KUBECTL), 43, KUBECTL),
            mark(43, KUBECTL)
        );
        assert_eq!(j(Served::minted(42, false), 43, KUBECTL), mark(43, KUBECTL));
        // Process 42 exec'ed another program since (a dispatcher): a first call.
        assert_eq!(j(Served::cache(42, OTHER), 42, KUBECTL), mark(42, KUBECTL));
        // Minted for this very kubectl, which asks again: refused too.
        let minted_for = |parent, image| Served {
            image,
            ..Served::minted(parent, false)
        };
        assert_eq!(j(minted_for(42, KUBECTL), 42, KUBECTL), Verdict::Rejected);
        // ... but not by another process, nor after an exec.
        assert_eq!(j(minted_for(42, KUBECTL), 43, KUBECTL), mark(43, KUBECTL));
        assert_eq!(j(minted_for(42, OTHER), 42, KUBECTL), mark(42, KUBECTL));
        // Minted where the program could not be told: served, nothing written.
        assert_eq!(
            j(Served::minted(42, false), 42, KUBECTL),
            Verdict::Serve { mark: None }
        );
        // Minted in place of a refused token: nobody suspects it, nothing is
        // written over that.
        for parent in [42, 43] {
            assert_eq!(
                judge(
                    1000,
                    700,
                    Served::minted(42, true),
                    800,
                    60,
                    parent,
                    || panic!("asked")
                ),
                Verdict::Serve { mark: None }
            );
        }
        // Unknown parent: no record, no suspicion.
        assert_eq!(
            j(Served::cache(42, KUBECTL), 0, KUBECTL),
            Verdict::Serve { mark: None }
        );
        // Unknown program: served again (not a retry as far as can be told).
        assert_eq!(j(Served::cache(42, 0), 42, 0), mark(42, 0));
        // Stale wins over everything.
        assert_eq!(
            judge(1000, 700, Served::cache(42, KUBECTL), 990, 60, 42, || {
                KUBECTL
            }),
            Verdict::Stale
        );
    }
}
