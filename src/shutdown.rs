//! Graceful stops for the long-running roles (server and connector): wait
//! for Ctrl-C or SIGTERM, then let requests in flight finish (10 s at most).

use std::net::SocketAddr;
use std::time::Duration;

/// Waits for Ctrl-C or SIGTERM, then starts a graceful shutdown of `handle`.
pub async fn on_signal(handle: axum_server::Handle<SocketAddr>) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("shutting down: finishing requests in flight");
    handle.graceful_shutdown(Some(Duration::from_secs(10)));
}
