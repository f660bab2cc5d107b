//! How proxied streams end when access is revoked mid-stream (see
//! `streams`): an upgraded session (exec, attach, port-forward) is a byte
//! pipe each way that stops when told, after a last status frame for
//! WebSocket exec and attach; a response body (watch, `logs -f`) ends with
//! a last watch `ERROR` event when it is a JSON watch, else is cut short.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use hyper::body::{Body, Bytes, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::recorder::Recorder;
use super::streams::{Cut, CutSignal, Ticket};
use super::ws::{FrameReader, binary_frame, close_frame};

/// The message people see when their access ends mid-stream.
pub fn revoked_message(destination: &str) -> String {
    format!("infra: access to {destination} was revoked")
}

/// A Kubernetes `Status` for a stream cut short.
fn cut_status(cut: &Cut) -> serde_json::Value {
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": cut.message,
        "reason": "Forbidden",
        "details": {"causes": [{"message": cut.reason}]},
        "code": 403,
    })
}

/// Waits until the stream is cut; why.
async fn cut_reason(cut: &mut CutSignal) -> Cut {
    loop {
        if let Some(why) = cut.borrow_and_update().clone() {
            return why;
        }
        if cut.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// What an upgraded session moved, and whether it was cut.
pub struct Moved {
    pub up: u64,
    pub down: u64,
    pub cut: Option<Cut>,
}

/// Relays an upgraded connection both ways until both sides are done or
/// the stream is cut. `websocket`: the session speaks the Kubernetes
/// WebSocket protocols, so a cut exec or attach ends with a status on the
/// error channel (3) and a close frame, between two of the API server's
/// frames.
pub async fn relay<C, U>(
    client: C,
    upstream: U,
    websocket: bool,
    cut: CutSignal,
    recorder: Option<&Recorder>,
) -> Moved
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = tokio::io::split(upstream);
    let (up_n, down_n) = (AtomicU64::new(0), AtomicU64::new(0));
    let cut_up = cut.clone();
    let mut cut_down = cut;
    let up = async {
        let mut cut = cut_up;
        // What the person types, for the recording.
        let mut frames = recorder.map(|_| FrameReader::new());
        let mut buf = vec![0u8; 16 * 1024];
        let mut was_cut = false;
        loop {
            let n = tokio::select! {
                r = cr.read(&mut buf) => r.unwrap_or(0),
                _ = cut_reason(&mut cut) => {
                    was_cut = true;
                    0
                }
            };
            if n == 0 {
                break;
            }
            if let (Some(f), Some(r)) = (&mut frames, recorder) {
                f.feed(&buf[..n], |p| r.from_client(&p));
            }
            if uw.write_all(&buf[..n]).await.is_err() {
                break;
            }
            up_n.fetch_add(n as u64, Ordering::Relaxed);
        }
        // The client is done: tell the API server. A cut instead leaves the
        // API server's side open until the client has had its last word
        // (the connection closes when both directions are done).
        if !was_cut {
            let _ = uw.shutdown().await;
        }
    };
    let down = async {
        let mut frames = websocket.then(FrameReader::new);
        let mut buf = vec![0u8; 16 * 1024];
        let mut was_cut = None;
        loop {
            let n = tokio::select! {
                biased;
                why = cut_reason(&mut cut_down) => {
                    was_cut = Some(why);
                    0
                }
                r = ur.read(&mut buf) => r.unwrap_or(0),
            };
            if n == 0 {
                break;
            }
            if let Some(f) = &mut frames {
                f.feed(&buf[..n], |p| {
                    if let Some(r) = recorder {
                        r.from_cluster(&p);
                    }
                });
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
            down_n.fetch_add(n as u64, Ordering::Relaxed);
        }
        // The cut also ends the other direction, whose end may reach the
        // API server and close this side first: it was a cut all the same.
        let was_cut = was_cut.or_else(|| cut_down.borrow().clone());
        if let (Some(why), Some(f)) = (&was_cut, &frames)
            && f.at_boundary()
        {
            let mut last = vec![3u8];
            last.extend_from_slice(cut_status(why).to_string().as_bytes());
            let _ = cw.write_all(&binary_frame(&last)).await;
            let _ = cw.write_all(&close_frame()).await;
        }
        let _ = cw.flush().await;
        let _ = cw.shutdown().await;
        was_cut
    };
    let ((), cut) = tokio::join!(up, down);
    Moved {
        up: up_n.load(Ordering::Relaxed),
        down: down_n.load(Ordering::Relaxed),
        cut,
    }
}

/// Follows a JSON stream (a watch: one object after another) to know when
/// it stands between two objects.
#[derive(Default)]
struct JsonObjects {
    depth: u32,
    in_string: bool,
    escaped: bool,
}

impl JsonObjects {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
        }
    }

    fn between(&self) -> bool {
        self.depth == 0 && !self.in_string
    }
}

/// A response body that stays registered as an open stream until it ends,
/// and ends early when the stream is cut.
pub struct Guarded<B> {
    inner: B,
    _ticket: Ticket,
    cut: Pin<Box<dyn Future<Output = Cut> + Send>>,
    /// A JSON watch: followed, to end it with an `ERROR` event.
    watch: Option<JsonObjects>,
    done: bool,
}

impl<B> Guarded<B> {
    pub fn new(inner: B, ticket: Ticket, mut cut: CutSignal, json_watch: bool) -> Guarded<B> {
        Guarded {
            inner,
            _ticket: ticket,
            cut: Box::pin(async move { cut_reason(&mut cut).await }),
            watch: json_watch.then(JsonObjects::default),
            done: false,
        }
    }
}

impl<B> Body for Guarded<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(why) = self.cut.as_mut().poll(cx) {
            self.done = true;
            return match &self.watch {
                Some(w) if w.between() => {
                    let event = serde_json::json!({
                        "type": "ERROR",
                        "object": cut_status(&why),
                    });
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from(format!("{event}\n"))))))
                }
                _ => Poll::Ready(Some(Err(why.message.into()))),
            };
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(w), Some(data)) = (&mut self.watch, frame.data_ref()) {
                    w.feed(data);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.done {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::JsonObjects;

    #[test]
    fn json_objects_are_followed_across_strings_and_pieces() {
        let mut j = JsonObjects::default();
        j.feed(br#"{"type":"ADDED","object":{"a":"}{\"x"}}"#);
        assert!(j.between());
        j.feed(b"\n{\"type\":");
        assert!(!j.between());
        j.feed(br#""MODIFIED","object":{"b":"]"}}"#);
        assert!(j.between());
    }
}
