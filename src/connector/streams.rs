//! Access cut mid-stream. Every request that stays open (a watch, `logs
//! -f`, exec, attach and port-forward may stay open for hours) is
//! registered here while it is, with who holds it as the token says.
//! After each answer of the grants' long poll (the server's change feed
//! wakes it when a grant is removed, a user removed or out of a group, a
//! key revoked) and every 30 s anyway, the connector asks the server
//! whether those people still have access (`POST /api/access/check`) and
//! cuts the streams of those who lost it: an exec or attach over WebSocket
//! gets a last status saying `infra: access to DEST was revoked`, a JSON
//! watch a last `ERROR` event saying so, anything else is closed. A token
//! found revoked as a whole is refused for new requests too.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::api::{AccessCheckRequest, AccessCheckResponse, AccessHolder};
use crate::client::Client;

/// Why a stream is cut: what the person is told, and what the log says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub message: String,
    pub reason: String,
}

/// Cuts one stream.
pub type Cutter = std::sync::Arc<watch::Sender<Option<Cut>>>;

/// One open stream.
struct Open {
    holder: AccessHolder,
    user: String,
    path: String,
    cut: Cutter,
}

/// The open streams, and the tokens found revoked.
#[derive(Default)]
pub struct Streams {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Open>>,
}

/// A registered stream: dropped when it ends.
pub struct Ticket {
    id: u64,
    streams: std::sync::Arc<Streams>,
    cutter: Cutter,
}

impl Ticket {
    /// Cuts this stream (for instance when its recording fails).
    pub fn cutter(&self) -> Cutter {
        self.cutter.clone()
    }
}

/// What a stream's task waits on.
pub type CutSignal = watch::Receiver<Option<Cut>>;

impl Streams {
    /// Registers a stream held by `holder`; returns the ticket (drop it when
    /// the stream ends) and the signal that says when to cut it.
    pub fn open(
        self: &std::sync::Arc<Self>,
        holder: AccessHolder,
        user: &str,
        path: &str,
    ) -> (Ticket, CutSignal) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        let tx = std::sync::Arc::new(tx);
        self.open.lock().unwrap_or_else(|e| e.into_inner()).insert(
            id,
            Open {
                holder,
                user: user.to_string(),
                path: path.to_string(),
                cut: tx.clone(),
            },
        );
        (
            Ticket {
                id,
                streams: self.clone(),
                cutter: tx,
            },
            rx,
        )
    }

    fn close(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// The distinct holders of open streams.
    pub fn holders(&self) -> Vec<AccessHolder> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mut seen = std::collections::HashSet::new();
        open.values()
            .filter(|o| o.cut.borrow().is_none())
            .map(|o| o.holder.clone())
            .filter(|h| seen.insert(h.clone()))
            .collect()
    }

    /// Cuts every open stream held by `holder`; returns how many.
    pub fn cut(&self, holder: &AccessHolder, why: &str, destination: &str) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        for o in open.values().filter(|o| &o.holder == holder) {
            if o.cut.borrow().is_some() {
                continue;
            }
            tracing::info!(
                user = %o.user,
                path = %o.path,
                reason = %why,
                "cut a stream: access to {destination} was revoked"
            );
            o.cut.send_replace(Some(Cut {
                message: super::pipe::revoked_message(destination),
                reason: why.to_string(),
            }));
            n += 1;
        }
        n
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.streams.close(self.id);
    }
}

/// Checks the holders of open streams with the server whenever `wake`
/// changes (after each answer of the grants' long poll) and every 30 s, and
/// cuts what lost access. Tokens revoked as a whole are refused from then on.
pub async fn guard_forever(
    client: Client,
    destination: String,
    c: std::sync::Arc<super::Connector>,
    mut wake: watch::Receiver<Option<std::sync::Arc<Vec<crate::api::Grant>>>>,
) {
    let mut follower = true;
    loop {
        tokio::select! {
            changed = wake.changed(), if follower => follower = changed.is_ok(),
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
        if let Err(e) = check(&client, &destination, &c).await {
            tracing::warn!("cannot check the access behind open streams: {e:#}");
        }
    }
}

/// One round: ask about every holder of an open stream, cut the refused.
pub async fn check(client: &Client, destination: &str, c: &super::Connector) -> anyhow::Result<()> {
    let holders = c.streams.holders();
    if holders.is_empty() {
        return Ok(());
    }
    for chunk in holders.chunks(crate::api::MAX_ACCESS_CHECK_HOLDERS) {
        let req = AccessCheckRequest {
            destination: destination.to_string(),
            holders: chunk.to_vec(),
        };
        let answer: AccessCheckResponse = client.post("/api/access/check", &req).await?;
        for (h, v) in chunk.iter().zip(answer.results) {
            if v.allowed {
                continue;
            }
            let why = v.reason.unwrap_or_else(|| "access revoked".into());
            if v.token_revoked {
                c.verifier
                    .revoke_matching(&h.sub, h.sid.as_deref(), &h.groups);
            }
            c.streams.cut(h, &why, destination);
        }
    }
    Ok(())
}
