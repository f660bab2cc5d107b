//! `infra sessions`: exec and attach sessions recorded by connectors
//! (`infra connector --record-sessions`, `infra grants add
//! --record-sessions`). List them, play one back in the terminal at its
//! real pace, or export its asciicast v2 file for asciinema.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::Usage;
use super::output::{self, FormatArg, short_time};
use super::session::{ServerArg, resolve};
use crate::api::Session;
use crate::client::enc;

#[derive(Debug, clap::Subcommand)]
pub enum SessionsCmd {
    /// List recorded sessions, newest first (everyone's for admins, else your own)
    #[command(
        alias = "ls",
        after_help = "Examples:\n  infra sessions list\n  infra sessions list --user alice@example.com \
                      --destination prod\n  infra sessions list --format json"
    )]
    List {
        /// Only this user's sessions (admins)
        #[arg(long)]
        user: Option<String>,
        /// Only sessions on this destination
        #[arg(long)]
        destination: Option<String>,
        /// At most this many sessions
        #[arg(long, default_value_t = 100)]
        limit: u64,
        #[command(flatten)]
        format: FormatArg,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Play a session back in this terminal, at the pace it happened
    #[command(after_help = "Examples:\n  infra sessions play 8f3k2q\n  \
                            infra sessions play 8f3k2q --speed 4 --idle-limit 2s")]
    Play {
        /// The session's id (`infra sessions list`)
        id: String,
        /// Play this many times faster (0.5 plays at half speed)
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Shorten every pause to at most this long
        #[arg(long, value_name = "DURATION", value_parser = crate::api::parse_duration)]
        idle_limit: Option<Duration>,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Write a session's recording, an asciicast v2 file (`asciinema play FILE` plays it)
    #[command(
        after_help = "Examples:\n  infra sessions export 8f3k2q -o session.cast\n  \
                            infra sessions export 8f3k2q > session.cast"
    )]
    Export {
        /// The session's id (`infra sessions list`)
        id: String,
        /// Write here instead of to standard output
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArg,
    },
}

/// How long a session took, as `1m05s`; `running` while it does.
fn took(s: &Session) -> String {
    use time::format_description::well_known::Rfc3339;
    let parse = |t: &str| time::OffsetDateTime::parse(t, &Rfc3339).ok();
    match (parse(&s.started), s.ended.as_deref().and_then(parse)) {
        (Some(a), Some(b)) => {
            crate::api::format_duration_secs((b - a).whole_seconds().max(0) as u64)
        }
        (_, None) if s.ended.is_none() => "running".into(),
        _ => "-".into(),
    }
}

fn outcome(s: &Session) -> String {
    match (s.exit_code, s.end_reason.as_str()) {
        (Some(c), "") => format!("exit {c}"),
        (Some(c), why) => format!("exit {c} ({why})"),
        (None, "") => "-".into(),
        (None, why) => why.to_string(),
    }
}

pub async fn run(cmd: SessionsCmd) -> anyhow::Result<()> {
    match cmd {
        SessionsCmd::List {
            user,
            destination,
            limit,
            format,
            server,
        } => {
            let s = resolve(server.server.as_deref())?;
            let mut q = Vec::new();
            if let Some(u) = &user {
                q.push(format!("user={}", enc(u)));
            }
            if let Some(d) = &destination {
                q.push(format!("destination={}", enc(d)));
            }
            let path = if q.is_empty() {
                "/api/sessions".to_string()
            } else {
                format!("/api/sessions?{}", q.join("&"))
            };
            let sessions: Vec<Session> = s.client.list_at_most(&path, limit).await?;
            let rows: Vec<Vec<String>> = sessions
                .iter()
                .map(|x| {
                    vec![
                        x.id.clone(),
                        short_time(&x.started),
                        x.user.clone(),
                        format!("{}/{}/{}", x.destination, x.namespace, x.pod),
                        format!("{} {}", x.kind, x.command).trim().to_string(),
                        took(x),
                        outcome(x),
                    ]
                })
                .collect();
            output::list(
                format.format(),
                &sessions,
                &["ID", "STARTED", "USER", "WHERE", "COMMAND", "TOOK", "ENDED"],
                rows,
            )
        }
        SessionsCmd::Play {
            id,
            speed,
            idle_limit,
            server,
        } => {
            if !(speed.is_finite() && speed > 0.0) {
                return Err(Usage("--speed must be more than 0, e.g. 2 or 0.5".into()).into());
            }
            let s = resolve(server.server.as_deref())?;
            let cast = s
                .client
                .get_text(&format!("/api/sessions/{}/recording", enc(&id)))
                .await?;
            play(&cast, speed, idle_limit, &mut std::io::stdout().lock()).await
        }
        SessionsCmd::Export { id, output, server } => {
            let s = resolve(server.server.as_deref())?;
            let cast = s
                .client
                .get_text(&format!("/api/sessions/{}/recording", enc(&id)))
                .await?;
            match output {
                Some(path) => {
                    crate::fsutil::write_private(&path, cast.as_bytes())?;
                    eprintln!(
                        "Wrote session {id} to {} (play it with `asciinema play {}`)",
                        path.display(),
                        path.display()
                    );
                }
                None => std::io::stdout().lock().write_all(cast.as_bytes())?,
            }
            Ok(())
        }
    }
}

/// Writes what the terminal showed (`o` events) at the pace it was shown,
/// `speed` times faster, pauses cut to `idle_limit`.
pub async fn play(
    cast: &str,
    speed: f64,
    idle_limit: Option<Duration>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut lines = cast.lines();
    let header: serde_json::Value = lines
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| anyhow::anyhow!("the recording is empty or not asciicast"))?;
    anyhow::ensure!(
        header["version"] == 2,
        "the recording is not asciicast version 2"
    );
    let start = Instant::now();
    // Where the recording's clock stands, with pauses cut to the limit.
    let (mut last, mut shown) = (0.0f64, 0.0f64);
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let Ok((t, code, data)) = serde_json::from_str::<(f64, String, String)>(line) else {
            anyhow::bail!("the recording has an event infra cannot read: {line}");
        };
        let mut gap = (t - last).max(0.0);
        if let Some(limit) = idle_limit {
            gap = gap.min(limit.as_secs_f64());
        }
        last = t;
        shown += gap;
        if code != "o" {
            continue;
        }
        let due = Duration::from_secs_f64(shown / speed);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            out.flush()?;
            tokio::time::sleep(wait).await;
        }
        out.write_all(data.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plays_what_the_terminal_showed_and_nothing_typed() {
        let cast = concat!(
            r#"{"version":2,"width":80,"height":24}"#,
            "\n",
            r#"[0.01,"i","ls\r"]"#,
            "\n",
            r#"[0.02,"o","a\r\nb ✓\r\n"]"#,
            "\n",
            r#"[0.03,"r","100x40"]"#,
            "\n",
            r#"[9.5,"o","$ "]"#,
            "\n",
        );
        let mut out = Vec::new();
        let started = Instant::now();
        play(cast, 1.0, Some(Duration::from_millis(10)), &mut out)
            .await
            .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "a\r\nb ✓\r\n$ ");
        assert!(started.elapsed() < Duration::from_secs(5), "pauses are cut");
        let mut out = Vec::new();
        assert!(play("not a cast", 1.0, None, &mut out).await.is_err());
    }
}
