//! Sign-in without a local browser: RFC 8628's device flow, carried out
//! through the server's own web sign-in, so it works with every provider,
//! even those that have no device grant of their own.
//!
//! ```text
//! infra login SERVER --device
//!   POST /api/device {providerID?}      -> deviceCode, userCode, verificationURI, interval
//!   (the person, on any device)
//!   GET  /device[?user_code=]           -> form: the user code (+ CSRF token)
//!   POST /device                        -> 303 to the provider (state, nonce, PKCE S256),
//!                                          redirect URI = the server's callback URL
//!   GET  /login/callback?code&state     -> code exchanged and checked like POST /api/login,
//!                                          303 to /device/confirm
//!   GET  /device/confirm                -> "sign in as NAME on the device showing CODE?"
//!   POST /device/confirm (CSRF)         -> approved or denied
//!   POST /api/device/status {deviceCode} (every `interval` seconds)
//!                                       -> authorization_pending | slow_down | approved (+ a new
//!                                          access key, issued then) | access_denied |
//!                                          expired_token | invalid_grant
//! ```
//!
//! Everything lives in the store (device codes by the SHA-256 of the code,
//! browser sign-ins by the SHA-256 of their `state`), so any replica can
//! serve any step. The pages are plain server-rendered HTML without
//! JavaScript. Forms carry a CSRF token that must equal a `SameSite=Strict`
//! cookie (double submit, compared in constant time); a second, `Lax`
//! cookie binds a provider round trip to the browser that started it, so a
//! sign-in cannot be finished in another browser. Pages refuse framing and
//! show no secret: no access key, device code, authorization code or token.
//!
//! The provider's authorization URL and the random tokens come from
//! `crate::web`, the same code that builds the CLI's own browser sign-in.
//!
//! The module is split along those lines: `api` answers the CLI (the JSON
//! API), `pages` renders what the person sees, `signin` carries the round
//! trip through the provider; this file holds the codes and the settings
//! they share.

pub mod api;
mod pages;
mod signin;

pub use api::{create, status};
pub use pages::pages;
// The three parts call one another through here (each has `use super::*`).
#[allow(unused_imports)]
use {api::*, pages::*, signin::*};

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;

use crate::api::{
    DeviceAuthorization, DeviceAuthorizationRequest, DeviceStatus, DeviceStatusRequest,
    DeviceStatusResponse,
};
use crate::server::AppState;
use crate::server::crypto::hash_secret;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{ApiJson, RemoteAddr, parse_json};
use crate::server::ratelimit::{self, PerSource};
use crate::server::routes::auth;
use crate::server::store::{
    self, AuditEntry, DeviceCodeRow, DeviceSigninRow, NewDeviceCode, NewDeviceSignin, PageRequest,
    ProviderRow, StoreError,
};
use crate::web::{ct_eq, html_escape, random_token};

/// Letters a person cannot mistake for one another or for digits, and that
/// spell no words: no vowels, no I/L/O/0/1 look-alikes (RFC 8628 6.1).
pub const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
/// 20^8, about 2^34.6 codes; with the wrong-code limit below, guessing a
/// live one is hopeless.
pub const USER_CODE_LEN: usize = 8;

/// Device codes one source (a client address, an IPv6 client's /64) may
/// create per minute.
pub(super) const CREATIONS: PerSource = PerSource {
    what: "device.create",
    max: 10,
    window_ms: 60 * 1000,
};
/// Wrong user codes one source may type per 10 minutes.
pub(super) const WRONG_CODES: PerSource = PerSource {
    what: "device.wrong_code",
    max: 10,
    window_ms: 10 * 60 * 1000,
};
/// How much each `slow_down` adds to the polling interval (RFC 8628 3.5).
pub(super) const SLOW_DOWN_STEP_SECS: i64 = 5;
/// How long a browser has from entering the code to answering the question.
pub(super) const SIGNIN_TTL_SECS: i64 = 10 * 60;
/// Device codes are kept this long after they expire (for the "expired"
/// answers), then removed.
pub(super) const KEEP_EXPIRED_SECS: i64 = 3600;

pub(super) const CSRF_COOKIE: &str = "__Host-infra-csrf";
pub(super) const BROWSER_COOKIE: &str = "__Host-infra-browser";

// ------------------------------------------------------------------ codes

/// A new user code, normalized (no dash).
pub(super) fn new_user_code() -> String {
    crate::web::random_from(USER_CODE_LEN, USER_CODE_ALPHABET)
}

/// What a person typed (`wdjb mjht`, `WDJB-MJHT`) as the stored form
/// (`WDJBMJHT`), or None when it cannot be a user code.
pub fn normalize_user_code(input: &str) -> Option<String> {
    let s: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (s.len() == USER_CODE_LEN && s.bytes().all(|b| USER_CODE_ALPHABET.contains(&b))).then_some(s)
}

/// `WDJBMJHT` -> `WDJB-MJHT`.
pub fn format_user_code(normalized: &str) -> String {
    if normalized.len() == USER_CODE_LEN && normalized.is_ascii() {
        format!("{}-{}", &normalized[..4], &normalized[4..])
    } else {
        normalized.to_string()
    }
}

pub(super) fn is_token(v: &str) -> bool {
    (32..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_easy_to_type() {
        for _ in 0..200 {
            let c = new_user_code();
            assert_eq!(c.len(), USER_CODE_LEN);
            assert!(c.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)), "{c}");
            assert_eq!(normalize_user_code(&c).as_deref(), Some(c.as_str()));
        }
        // No vowels (no words), no digits (no 0/O, 1/I mix-ups).
        assert!(
            USER_CODE_ALPHABET
                .iter()
                .all(|b| b.is_ascii_uppercase() && !b"AEIOUY".contains(b))
        );
    }

    #[test]
    fn user_codes_compare_without_case_dash_or_spaces() {
        assert_eq!(
            normalize_user_code(" wdjb-mjht ").as_deref(),
            Some("WDJBMJHT")
        );
        assert_eq!(
            normalize_user_code("WDJB MJHT").as_deref(),
            Some("WDJBMJHT")
        );
        assert_eq!(normalize_user_code("wdjbmjht").as_deref(), Some("WDJBMJHT"));
        assert_eq!(normalize_user_code("WDJB-MJH"), None, "too short");
        assert_eq!(normalize_user_code("WDJB-MJHA"), None, "a vowel");
        assert_eq!(normalize_user_code("WDJB-MJH0"), None, "a digit");
        assert_eq!(format_user_code("WDJBMJHT"), "WDJB-MJHT");
    }

    #[test]
    fn csp_refuses_framing_and_scripts() {
        assert!(CSP.contains("frame-ancestors 'none'"));
        assert!(CSP.contains("default-src 'none'"));
        assert!(!CSP.contains("unsafe"));
    }
}
