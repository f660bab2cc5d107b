//! The exec plugin's token cache: the short-lived cluster token (a JWT the
//! server minted for one destination) kept between two `kubectl` calls, so
//! that most calls are answered from one small file without the keyring, the
//! config file or the network.
//!
//! **Where, and for whom.** One file per cache key in [`cache_dir`]
//! (`$INFRA_CACHE_DIR`, else `~/.cache/infra/tokens` on Linux), mode 0600 in
//! a 0700 directory, written atomically. The key is (config home, user,
//! server, destination):
//! - the config home (`INFRA_HOME` or the default config directory) is in
//!   the name, as [`home_tag`], a digest of its absolute path, so two
//!   `INFRA_HOME`s on one OS account, logged in as two people, never read
//!   each other's tokens even when they share the cache directory;
//! - the user: a config home is logged in to a server as one user at a time,
//!   and the warm path must not parse the config to learn which, so the
//!   user is kept *in* the entry ([`user_tag`]) rather than in its name.
//!   The cold path, which reads the config anyway, takes an entry for
//!   another user as a miss, and checks again, before it saves a token,
//!   that the config still names the user it was minted for; `infra login` (as
//!   anyone) and `infra logout` delete the server's entries of their config
//!   home, under each entry's lock, *after* the config changed. So once a
//!   login as someone else has finished, no entry of the previous user is
//!   left for the warm path to serve; a refresh that was under way either
//!   finished before (and its file is deleted) or notices and does not save;
//! - with `INFRA_ACCESS_KEY`, a short digest of that key is in the name too,
//!   so two identities on one machine never share a token.
//!
//! The name is `HOME_SERVER_DEST[_kKEY]`: the home tag (`H` + 16 hex
//! digits), then the canonical server and the destination, each
//! percent-encoded down to `[a-z0-9.-]` (a valid, case-safe file name
//! everywhere, and `_` never occurs inside a part). Beside it, `NAME.lock` is
//! the [`FileLock`] the cold path holds across re-read → mint → save. Names
//! of an older infra (`SERVER_DEST[_kKEY]`, without a home) are never read;
//! [`prune`] deletes them.
//!
//! **The content** is two lines:
//!
//! ```text
//! v2 SERVED EXPIRES MINTED USER
//! TOKEN
//! ```
//!
//! - `EXPIRES` and `MINTED`, Unix seconds *by this machine's clock*: when
//!   the token stops being valid, and when it was asked for. The server
//!   stamps tokens with its own clock; the cold path turns the lifetime it
//!   granted (`exp - iat`) into local time at mint (see `cli::tokens`), so a
//!   laptop whose clock is minutes off neither serves tokens the cluster
//!   already rejects (slow clock) nor refreshes on every call (fast clock).
//!   An entry whose `MINTED` is later than now (the clock was set back since)
//!   is a miss: how long the token has lived is then unknown.
//! - `USER`: [`user_tag`] of the user the token was minted for, or `-` for
//!   `INFRA_ACCESS_KEY` (whose digest is in the name).
//! - `SERVED`: who last received this token, and how (see [`Served`]), in
//!   a fixed width at a fixed offset ([`SERVED_OFFSET`]), so the warm path
//!   updates it with one positioned write and no rename. It is how kubectl's
//!   retry after a 401 is recognised (see [`judge`]).
//!
//! Anything else in the file (or a token with characters a bearer token
//! cannot have, or a missing final newline) makes it a miss, to be
//! overwritten by the next refresh.
//!
//! This module is on kubectl's hot path: reading an entry costs one `open`
//! and one `read` (a fixed buffer, no `stat`) and a few comparisons; unless
//! the token was minted for the caller's parent or in place of a refused
//! one, also a `readlink` of the parent's executable and, unless the call is
//! a retry, one positioned write of 19 bytes.
//!
//! **How it is split.** This file re-exports the parts, so callers name
//! `token_cache::ITEM`:
//! - `name`: the cache directory and the file names, with the tags of config
//!   homes and users that make up the key;
//! - `format`: the two lines of a file, read in one go, parsed, written
//!   whole, and the record of who was served updated in place;
//! - `verdict`: whether an entry may be served ([`judge`]: freshness by this
//!   machine's clock, and kubectl's retry after a 401);
//! - `process`: who is asking (the parent process and the program it runs);
//! - `cleanup`: deleting entries at login, logout and prune.
//!
//! [`FileLock`]: super::lock::FileLock

mod cleanup;
mod format;
mod name;
mod process;
mod verdict;

pub use cleanup::{prune, prune_in, remove_server, remove_server_in};
pub use format::{
    Cached, Entry, How, SERVED_LEN, SERVED_OFFSET, Served, is_token, load, mark, open, parse, read,
    save,
};
pub use name::{
    ENV_KEY_USER, LOCK_SUFFIX, TOKEN_SUFFIX, cache_dir, home_tag, lock_path, stem, this_home,
    token_path, user_tag,
};
pub use process::{parent_process, process_image};
pub use verdict::{Verdict, judge};

/// What the tests of the parts share.
#[cfg(test)]
mod testing {
    use super::{Cached, Served};
    use secrecy::SecretString;

    pub const JWT: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_";
    pub const HOME: &str = "H0123456789ABCDEF";

    pub fn cached(expires: i64, minted: i64, user: &str, served: Served) -> Cached {
        Cached {
            expires,
            minted,
            user: user.to_string(),
            served,
            token: SecretString::from(JWT),
        }
    }
}
