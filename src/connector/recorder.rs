//! Exec and attach sessions recorded in asciicast v2, as they pass through
//! the connector over WebSocket (`v4`/`v5.channel.k8s.io`): what the
//! terminal showed (stdout and stderr, `o` events), what the person typed
//! (stdin, `i` events) and the terminal's size (the header, then `r`
//! events), with timing; the exit code from the error channel. The text
//! goes to the server while the session runs, a chunk a second, so little
//! is lost if the connector dies. A recording that cannot go on (the
//! server refuses or cannot be reached, or `--max-session-bytes` is
//! reached) ends the session: never run unrecorded what must be recorded.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::api::{CreateSessionRequest, EndSessionRequest, Session};
use crate::client::Client;

use super::streams::{Cut, Cutter};
use super::ws::Piece;

/// Flush at least this often, and sooner past `FLUSH_BYTES`.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
const FLUSH_BYTES: usize = 256 * 1024;

/// Bytes of one stream that may end inside a UTF-8 character.
#[derive(Default)]
struct Utf8 {
    carry: Vec<u8>,
}

impl Utf8 {
    /// The text of `bytes` after what was carried; an unfinished character
    /// at the end waits for the next piece, invalid bytes become U+FFFD.
    fn decode(&mut self, bytes: &[u8]) -> String {
        self.carry.extend_from_slice(bytes);
        let mut out = String::new();
        let mut rest: &[u8] = &self.carry;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(good).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{fffd}');
                            rest = &bad[n..];
                        }
                        None => {
                            rest = bad;
                            break;
                        }
                    }
                }
            }
        }
        self.carry = rest.to_vec();
        out
    }
}

/// One direction's message in progress: its channel, and the bytes of
/// messages read whole (status, resize).
#[derive(Default)]
struct Direction {
    channel: Option<u8>,
    whole: Vec<u8>,
}

impl Direction {
    /// The data of a piece of a binary message, after the channel byte a
    /// message starts with (which it notes); none for other frames.
    fn payload<'p>(&mut self, p: &Piece<'p>) -> Option<&'p [u8]> {
        if p.opcode != 2 && p.opcode != 0 {
            return None;
        }
        if !p.first {
            return Some(p.data);
        }
        self.channel = p.data.first().copied();
        self.whole.clear();
        Some(p.data.get(1..).unwrap_or_default())
    }
}

struct State {
    started: Instant,
    started_unix: i64,
    width: u32,
    height: u32,
    header_sent: bool,
    /// Events not yet sent.
    pending: String,
    /// Bytes sent and pending.
    total: u64,
    seq: i64,
    full: bool,
    finished: bool,
    up: Direction,
    down: Direction,
    stdin: Utf8,
    stdout: Utf8,
    stderr: Utf8,
    exit_code: Option<i64>,
    /// The status when it was not a plain exit.
    status_message: Option<String>,
}

pub struct Recorder {
    client: Client,
    pub session: Session,
    command: String,
    title: String,
    max_bytes: u64,
    cutter: Cutter,
    state: Mutex<State>,
    wake: tokio::sync::Notify,
}

/// A command's words as a shell would read them back.
pub fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
            if plain {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Recorder {
    /// Starts a session's recording at the server; an error means the
    /// session must not run.
    pub async fn start(
        client: Client,
        req: CreateSessionRequest,
        max_bytes: u64,
        cutter: Cutter,
    ) -> anyhow::Result<Arc<Recorder>> {
        let session: Session = client.post("/api/sessions", &req).await?;
        let r = Arc::new(Recorder {
            client,
            command: req.command.clone(),
            title: format!(
                "{} on {}/{}/{}",
                req.user, req.destination, req.namespace, req.pod
            ),
            session,
            max_bytes,
            cutter,
            state: Mutex::new(State {
                started: Instant::now(),
                started_unix: crate::clock::now(),
                width: 80,
                height: 24,
                header_sent: false,
                pending: String::new(),
                total: 0,
                seq: 0,
                full: false,
                finished: false,
                up: Direction::default(),
                down: Direction::default(),
                stdin: Utf8::default(),
                stdout: Utf8::default(),
                stderr: Utf8::default(),
                exit_code: None,
                status_message: None,
            }),
            wake: tokio::sync::Notify::new(),
        });
        r.lock().total = r.header_bound();
        tokio::spawn(r.clone().flush_forever());
        Ok(r)
    }

    /// The longest the header can be, counted from the start.
    fn header_bound(&self) -> u64 {
        self.header(u32::MAX, u32::MAX, i64::MAX).len() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an event (`o`, `i` or `r`) to what is pending.
    fn event(&self, s: &mut State, code: &str, data: &str) {
        if data.is_empty() || s.full {
            return;
        }
        let t = s.started.elapsed().as_secs_f64();
        let line =
            match serde_json::to_string(&((t * 1_000_000.0).round() / 1_000_000.0, code, data)) {
                Ok(l) => l + "\n",
                Err(_) => return,
            };
        if s.total + line.len() as u64 > self.max_bytes {
            s.full = true;
            self.cutter.send_replace(Some(Cut {
                message: format!(
                    "infra: this session reached its recording limit ({} bytes), so it was ended",
                    self.max_bytes
                ),
                reason: "recording limit".into(),
            }));
            return;
        }
        s.total += line.len() as u64;
        s.pending.push_str(&line);
        if s.pending.len() >= FLUSH_BYTES {
            self.wake.notify_one();
        }
    }

    /// A piece of what the client sent: stdin (0) and resizes (4).
    pub fn from_client(&self, p: &Piece<'_>) {
        let mut s = self.lock();
        let s = &mut *s;
        let Some(data) = s.up.payload(p) else {
            return;
        };
        match s.up.channel {
            Some(0) => {
                let text = s.stdin.decode(data);
                self.event(s, "i", &text);
            }
            Some(4) => {
                s.up.whole.extend_from_slice(data);
                if p.last {
                    #[derive(serde::Deserialize)]
                    #[serde(rename_all = "PascalCase")]
                    struct Size {
                        width: u32,
                        height: u32,
                    }
                    if let Ok(size) = serde_json::from_slice::<Size>(&s.up.whole) {
                        if s.header_sent {
                            let r = format!("{}x{}", size.width, size.height);
                            self.event(s, "r", &r);
                        } else {
                            s.width = size.width;
                            s.height = size.height;
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// A piece of what the cluster sent: stdout (1), stderr (2), status (3).
    pub fn from_cluster(&self, p: &Piece<'_>) {
        let mut s = self.lock();
        let s = &mut *s;
        let Some(data) = s.down.payload(p) else {
            return;
        };
        match s.down.channel {
            Some(1) => {
                let text = s.stdout.decode(data);
                self.event(s, "o", &text);
            }
            Some(2) => {
                let text = s.stderr.decode(data);
                self.event(s, "o", &text);
            }
            Some(3) => {
                s.down.whole.extend_from_slice(data);
                if p.last {
                    let (code, message) = exit_of(&s.down.whole);
                    s.exit_code = code;
                    s.status_message = message;
                }
            }
            _ => {}
        }
    }

    /// The asciicast header line.
    fn header(&self, width: u32, height: u32, started: i64) -> String {
        let header = serde_json::json!({
            "version": 2,
            "width": width,
            "height": height,
            "timestamp": started,
            "command": self.command,
            "title": self.title,
        });
        header.to_string() + "\n"
    }

    /// What is pending, with the header before the first event.
    fn take(&self) -> Option<(i64, String)> {
        let mut s = self.lock();
        let mut text = String::new();
        if !s.header_sent {
            text = self.header(s.width, s.height, s.started_unix);
            // The bound counted the longest header; now the real one.
            s.total = s.total + text.len() as u64 - self.header_bound();
            s.header_sent = true;
        }
        text.push_str(&std::mem::take(&mut s.pending));
        if text.is_empty() {
            return None;
        }
        let seq = s.seq;
        s.seq += 1;
        Some((seq, text))
    }

    /// Sends a chunk, trying three times.
    async fn send(&self, seq: i64, text: &str) -> anyhow::Result<()> {
        let path = format!("/api/sessions/{}/chunks?seq={seq}", self.session.id);
        let mut last = None;
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(300 * attempt)).await;
            }
            match self
                .client
                .post_text(&path, text, crate::api::ASCIICAST_MEDIA_TYPE)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if e.status().is_some_and(|s| (400..500).contains(&s)) => {
                    return Err(e.into());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .map(Into::into)
            .unwrap_or_else(|| anyhow::anyhow!("no answer")))
    }

    async fn flush(&self) -> anyhow::Result<()> {
        if let Some((seq, text)) = self.take() {
            self.send(seq, &text).await?;
        }
        Ok(())
    }

    async fn flush_forever(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FLUSH_EVERY) => {}
                _ = self.wake.notified() => {}
            }
            if self.lock().finished {
                return;
            }
            if let Err(e) = self.flush().await {
                tracing::error!(
                    session = %self.session.id,
                    "cannot store the session's recording, so the session is ended: {e:#}"
                );
                self.cutter.send_replace(Some(Cut {
                    message: "infra: this session's recording cannot be stored, so it was ended"
                        .into(),
                    reason: format!("recording failed: {e}"),
                }));
                return;
            }
        }
    }

    /// Sends the rest and ends the session at the server with its exit
    /// code and, when it did not end by itself, why.
    pub async fn finish(&self, cut: Option<&Cut>) {
        let flushed = self.flush().await;
        let (exit_code, status_message) = {
            let mut s = self.lock();
            s.finished = true;
            (s.exit_code, s.status_message.clone())
        };
        let reason = match (cut, flushed) {
            (Some(c), _) => c.reason.clone(),
            (None, Err(e)) => format!("recording failed: {e}"),
            (None, Ok(())) => status_message.unwrap_or_default(),
        };
        let req = EndSessionRequest {
            exit_code,
            reason: reason
                .chars()
                .filter(|c| !c.is_control())
                .take(250)
                .collect(),
        };
        let path = format!("/api/sessions/{}/end", self.session.id);
        if let Err(e) = self.client.post::<_, Session>(&path, &req).await {
            tracing::warn!(session = %self.session.id, "cannot end the session's recording: {e}");
        }
        self.wake.notify_one();
    }
}

/// The exit code a Kubernetes status on the error channel says: 0 for
/// `Success`, the `ExitCode` cause of a `NonZeroExitCode`; otherwise none,
/// with the status's message.
fn exit_of(status: &[u8]) -> (Option<i64>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(status) else {
        return (None, None);
    };
    if v["status"] == "Success" {
        return (Some(0), None);
    }
    if v["reason"] == "NonZeroExitCode"
        && let Some(causes) = v["details"]["causes"].as_array()
        && let Some(code) = causes
            .iter()
            .find(|c| c["reason"] == "ExitCode")
            .and_then(|c| c["message"].as_str())
            .and_then(|m| m.parse().ok())
    {
        return (Some(code), None);
    }
    (None, v["message"].as_str().map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_pieces_is_kept_whole() {
        let mut u = Utf8::default();
        let word = "wörld ✓".as_bytes();
        let mut out = String::new();
        for b in word {
            out.push_str(&u.decode(std::slice::from_ref(b)));
        }
        assert_eq!(out, "wörld ✓");
        assert_eq!(u.decode(b"a\xffb"), "a\u{fffd}b");
    }

    #[test]
    fn exit_codes_from_statuses() {
        assert_eq!(
            exit_of(br#"{"metadata":{},"status":"Success"}"#),
            (Some(0), None)
        );
        let failed = br#"{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
        assert_eq!(exit_of(failed), (Some(3), None));
        let other = br#"{"status":"Failure","message":"container not found"}"#;
        assert_eq!(exit_of(other), (None, Some("container not found".into())));
    }

    #[test]
    fn commands_read_back_as_typed() {
        let w = |v: &[&str]| shell_words(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            w(&["sh", "-c", "echo hi; exit 3"]),
            "sh -c 'echo hi; exit 3'"
        );
        assert_eq!(w(&["it's"]), r"'it'\''s'");
    }
}
