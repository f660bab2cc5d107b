//! Browser sign-in on this machine: the loopback listener on
//! `localhost:8301` that receives the provider's redirect, the one-time
//! secrets that bind the round trip (state, nonce, PKCE), and opening the
//! browser. The server, not this module, exchanges the code. The attempt's
//! secrets and the authorization URL are `crate::web`'s, which the server's
//! own web sign-in shares.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use tokio::sync::oneshot;

pub use crate::web::{Attempt, html_escape, pkce_challenge, random_token};

/// The port registered with providers: `http://localhost:8301`.
pub const DEFAULT_PORT: u16 = 8301;
/// How long to wait for the browser.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "port {0} on localhost is in use (is another `infra login` running?); stop that program, \
         or use --listen-port PORT with a port that is also registered as a redirect URI \
         (http://localhost:PORT) at your identity provider"
    )]
    InUse(u16),
    #[error("cannot listen on localhost:{0}: {1}")]
    Other(u16, std::io::Error),
}

/// Listeners bound on 127.0.0.1 and, where the machine has it, ::1.
pub struct Listeners {
    v4: tokio::net::TcpListener,
    v6: Option<tokio::net::TcpListener>,
    pub port: u16,
}

pub async fn bind(port: u16) -> Result<Listeners, ListenError> {
    let map = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            ListenError::InUse(port)
        } else {
            ListenError::Other(port, e)
        }
    };
    let v4 = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
        .map_err(map)?;
    let v6 =
        match tokio::net::TcpListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, port))).await {
            Ok(l) => Some(l),
            // Browsers resolving localhost to ::1 would find someone else here.
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(ListenError::InUse(port));
            }
            // No IPv6 on this machine: 127.0.0.1 is all there is.
            Err(_) => None,
        };
    Ok(Listeners { v4, v6, port })
}

/// What came back to the listener.
#[derive(Debug)]
pub enum Callback {
    Code(String),
    /// The provider's `error` and `error_description`.
    Denied(String),
}

/// How the sign-in that a callback brought ended, for the page the
/// browser is waiting for.
#[derive(Debug)]
pub enum Outcome {
    /// The server accepted the code: signed in as this user.
    SignedIn(String),
    /// Why it did not work.
    Failed(String),
}

struct Shared {
    expected_state: String,
    done: bool,
    tx: Option<oneshot::Sender<(Callback, Option<oneshot::Sender<Outcome>>)>>,
}

/// How long the browser's page waits for the server to take the code.
const OUTCOME_WAIT: Duration = Duration::from_secs(120);

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;\
padding:0 1rem;color:#222}h1{font-size:1.4rem}";

/// The page the browser shows after the provider's redirect: no scripts,
/// no framing, our one style by its hash.
fn page(status: StatusCode, title: &str, body: &str) -> axum::response::Response {
    static CSP: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "default-src 'none'; style-src {}; form-action 'none'; frame-ancestors 'none'; \
             base-uri 'none'",
            crate::web::csp_hash(STYLE)
        )
    });
    let html = crate::web::document(
        title,
        STYLE,
        &format!(
            "<main><h1>{}</h1><p>{}</p></main>",
            html_escape(title),
            html_escape(body)
        ),
    );
    (
        status,
        [
            ("Cache-Control", "no-store"),
            ("X-Frame-Options", "DENY"),
            ("Referrer-Policy", "no-referrer"),
            ("Content-Security-Policy", CSP.as_str()),
        ],
        Html(html),
    )
        .into_response()
}

async fn callback(
    State(shared): State<Arc<Mutex<Shared>>>,
    Query(q): Query<HashMap<String, String>>,
) -> axum::response::Response {
    let outcome = match received(&shared, &q) {
        Ok(outcome) => outcome,
        Err(page) => return page,
    };
    // The page says "signed in" only once the server took the code.
    match tokio::time::timeout(OUTCOME_WAIT, outcome).await {
        Ok(Ok(Outcome::SignedIn(user))) => page(
            StatusCode::OK,
            "Signed in",
            &format!(
                "You are signed in to infra as {user}. You can close this tab and go back to \
                 your terminal."
            ),
        ),
        Ok(Ok(Outcome::Failed(why))) => page(
            StatusCode::OK,
            "Sign-in failed",
            &format!(
                "Your identity provider signed you in, but infra did not accept it: {why}. \
                 Your terminal says more."
            ),
        ),
        _ => page(
            StatusCode::OK,
            "Sign-in not finished",
            "infra stopped before it could finish signing you in; see your terminal.",
        ),
    }
}

/// Takes the provider's redirect: a page to show at once, or a code handed
/// on, with where its outcome will come from.
#[allow(clippy::result_large_err)]
fn received(
    shared: &Mutex<Shared>,
    q: &HashMap<String, String>,
) -> Result<oneshot::Receiver<Outcome>, axum::response::Response> {
    let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
    if s.done {
        return Err(page(
            StatusCode::BAD_REQUEST,
            "Already signed in",
            "This sign-in has already completed. You can close this tab.",
        ));
    }
    let state_ok = q
        .get("state")
        .is_some_and(|st| crate::web::ct_eq(st, &s.expected_state));
    if !state_ok {
        return Err(page(
            StatusCode::BAD_REQUEST,
            "Sign-in link not recognized",
            "This response does not belong to the sign-in that infra is waiting for (its state does \
             not match). infra is still waiting: finish signing in from the link it printed.",
        ));
    }
    if let Some(err) = q.get("error") {
        let mut text = err.clone();
        if let Some(d) = q.get("error_description") {
            text.push_str(": ");
            text.push_str(d);
        }
        s.done = true;
        if let Some(tx) = s.tx.take() {
            let _ = tx.send((Callback::Denied(text.clone()), None));
        }
        return Err(page(
            StatusCode::OK,
            "Sign-in failed",
            &format!("Your identity provider said: {text}. You can close this tab."),
        ));
    }
    let Some(code) = q.get("code").filter(|c| !c.is_empty()) else {
        return Err(page(
            StatusCode::BAD_REQUEST,
            "No code",
            "The response carries no authorization code.",
        ));
    };
    s.done = true;
    let (otx, orx) = oneshot::channel();
    if let Some(tx) = s.tx.take() {
        let _ = tx.send((Callback::Code(code.clone()), Some(otx)));
    }
    Ok(orx)
}

/// A callback received, its listeners still serving the browser's page
/// until [`Pending::finish`] says how the sign-in ended.
pub struct Pending {
    pub callback: Callback,
    outcome: Option<oneshot::Sender<Outcome>>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Pending {
    /// Shows the browser how the sign-in ended, then stops listening.
    pub async fn finish(mut self, outcome: Outcome) {
        if let Some(tx) = self.outcome.take() {
            let _ = tx.send(outcome);
            // Let the browser receive its page.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
    }
}

/// Serves the listeners until the first valid callback; returns it, with
/// the listeners still up for the page that tells how it ended.
pub async fn wait_for_callback(listeners: Listeners, expected_state: String) -> Pending {
    let (tx, rx) = oneshot::channel();
    let shared = Arc::new(Mutex::new(Shared {
        expected_state,
        done: false,
        tx: Some(tx),
    }));
    let app = axum::Router::new()
        .route("/", axum::routing::get(callback))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(shared);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let serve = |l: tokio::net::TcpListener| {
        let app = app.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _ = axum::serve(l, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                })
                .await;
        })
    };
    let mut tasks = vec![serve(listeners.v4)];
    if let Some(v6) = listeners.v6 {
        tasks.push(serve(v6));
    }
    let (callback, outcome) = rx
        .await
        .unwrap_or((Callback::Denied("the listener stopped".into()), None));
    Pending {
        callback,
        outcome,
        stop: stop_tx,
        tasks,
    }
}

/// Opens the URL in the default browser, keeping whatever the launcher
/// prints away from stdout. Returns false when no browser could be opened.
pub fn open_browser(url: &str) -> bool {
    let opts = {
        let mut o = webbrowser::BrowserOptions::new();
        o.with_suppress_output(true);
        o
    };
    webbrowser::open_browser_with_options(webbrowser::Browser::Default, url, &opts).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_matches_rfc_7636_example() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let a = random_token();
        assert!(a.len() >= 43, "256 bits");
        assert_ne!(a, random_token());
    }

    #[test]
    fn authorization_url_carries_everything() {
        let a = Attempt::new(8301);
        let scopes = ["openid", "email", "offline_access"].map(String::from);
        let u = a
            .authorization_url("https://idp.example/auth?x=1", "cid", &scopes)
            .unwrap();
        let u = url::Url::parse(&u).unwrap();
        let q: HashMap<_, _> = u.query_pairs().into_owned().collect();
        assert_eq!(q["x"], "1");
        assert_eq!(q["redirect_uri"], "http://localhost:8301");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["code_challenge"], pkce_challenge(&a.code_verifier));
        assert_eq!(q["state"], a.state);
        assert_eq!(q["nonce"], a.nonce);
        assert_eq!(q["prompt"], "consent");
        assert_eq!(q["scope"], "openid email offline_access");
        assert!(!q.contains_key("max_age"));
    }

    #[test]
    fn reauth_asks_for_a_new_authentication() {
        let mut a = Attempt::new(8301);
        a.reauth = true;
        let query = |scopes: &[&str]| -> HashMap<String, String> {
            let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
            let u = a
                .authorization_url("https://idp.example/auth", "cid", &scopes)
                .unwrap();
            url::Url::parse(&u)
                .unwrap()
                .query_pairs()
                .into_owned()
                .collect()
        };
        let q = query(&["openid", "offline_access"]);
        assert_eq!(q["max_age"], "0");
        assert_eq!(q["prompt"], "login consent");
        let q = query(&["openid"]);
        assert_eq!(q["max_age"], "0");
        assert_eq!(q["prompt"], "login");
    }

    #[test]
    fn escapes_html() {
        assert_eq!(
            html_escape("<script>&\"'"),
            "&lt;script&gt;&amp;&quot;&#39;"
        );
    }
}
