//! `infra login SERVER --device`: sign in from a machine without a browser
//! (a server over SSH, a container). The server hands out a user code and a
//! page; the person opens the page on any device (a QR code helps with a
//! phone), signs in with the identity provider there and approves; this
//! side polls `POST /api/device/status` at the interval the server asks for
//! and receives a new access key. `login.rs` then stores it and writes the
//! kubeconfig exactly as after a browser sign-in.
//!
//! It is chosen on its own, with a one-line note, when no browser can be
//! opened here: see [`why_no_browser`].

use std::time::{Duration, Instant};

use super::AuthNeeded;
use super::login::LoginArgs;
use crate::api::{
    DeviceAuthorization, DeviceAuthorizationRequest, DeviceStatus, DeviceStatusRequest,
    DeviceStatusResponse, LoginResponse,
};
use crate::client::{Client, ClientError};

/// Why `infra login` signs in with a device code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// `--device`.
    Asked,
    /// No browser can be opened here; said in a one-line note.
    NoBrowser(&'static str),
}

/// Whether `infra login` should sign in with a device code: `--device`, or
/// no `--no-browser` and no way to open a browser here.
pub fn wanted(args: &LoginArgs) -> Option<Why> {
    if args.device {
        return Some(Why::Asked);
    }
    if args.no_browser {
        return None;
    }
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    why_no_browser(&env).map(Why::NoBrowser)
}

/// Why no browser can be opened on this machine, if that is so: an SSH
/// session without X forwarding, or (on Linux and the BSDs) no display at
/// all. `$BROWSER` names a browser that may need no display (lynx, w3m), so
/// it counts as a way to open one.
pub fn why_no_browser(env: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> Option<&'static str> {
    if env("BROWSER").is_some() {
        return None;
    }
    if env("SSH_CONNECTION").is_some() && env("DISPLAY").is_none() {
        return Some("this is an SSH session without X forwarding");
    }
    let desktopless = cfg!(any(
        target_os = "linux",
        target_os = "freebsd",
        target_os = "openbsd",
        target_os = "netbsd",
        target_os = "dragonfly"
    ));
    if desktopless && env("DISPLAY").is_none() && env("WAYLAND_DISPLAY").is_none() {
        return Some("there is no display here (neither DISPLAY nor WAYLAND_DISPLAY is set)");
    }
    None
}

/// Runs the device sign-in; returns what `POST /api/login` would have.
pub async fn sign_in(
    args: &LoginArgs,
    server: &str,
    client: &Client,
    why: Why,
) -> anyhow::Result<LoginResponse> {
    let provider = super::login::pick_provider(args, server, client).await?;
    if let Why::NoBrowser(reason) = why {
        eprintln!(
            "note: {reason}, so signing in with a code on another device (--device); use \
             --no-browser for a link to open in a browser on this machine instead"
        );
    }
    let auth: DeviceAuthorization = client
        .post(
            "/api/device",
            &DeviceAuthorizationRequest {
                provider_id: Some(provider.id.clone()),
                reauth: args.reauth,
            },
        )
        .await?;
    show(&provider.name, &auth);

    let mut interval = Duration::from_secs(auth.interval.max(1));
    // The server decides when the code expires; this only stops a client
    // whose server went away for good.
    let give_up = Instant::now() + Duration::from_secs(auth.expires_in) + Duration::from_secs(30);
    let again = format!("run `infra login {server} --device` to start again");
    let request = DeviceStatusRequest {
        device_code: auth.device_code.clone(),
    };
    let spinner =
        super::login::spinner("Waiting for the approval in the browser (Ctrl-C to cancel)");
    let finish = |sp: &Option<indicatif::ProgressBar>| {
        if let Some(sp) = sp {
            sp.finish_and_clear();
        }
    };
    let mut warned = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => {
                finish(&spinner);
                return Err(anyhow::Error::new(super::Cancelled));
            }
        }
        let answer: DeviceStatusResponse = match client.post("/api/device/status", &request).await {
            Ok(a) => a,
            // A replica restarting or a network blip: keep trying until the code expires.
            Err(e @ (ClientError::Transport(_) | ClientError::Api { status: 500.., .. })) => {
                if Instant::now() > give_up {
                    finish(&spinner);
                    return Err(e.into());
                }
                if !warned {
                    warned = true;
                    eprintln!("warning: {e}; still trying");
                }
                continue;
            }
            Err(e) => {
                finish(&spinner);
                return Err(e.into());
            }
        };
        let server_interval = Duration::from_secs(answer.interval.max(1));
        match answer.status {
            DeviceStatus::AuthorizationPending => interval = interval.max(server_interval),
            DeviceStatus::SlowDown => {
                interval = (interval + Duration::from_secs(5)).max(server_interval);
            }
            DeviceStatus::Approved => {
                finish(&spinner);
                let (Some(user_id), Some(name), Some(access_key), Some(expires)) = (
                    answer.user_id,
                    answer.name,
                    answer.access_key,
                    answer.expires,
                ) else {
                    anyhow::bail!("{server} approved the sign-in but sent no access key; {again}");
                };
                return Ok(LoginResponse {
                    user_id,
                    name,
                    access_key,
                    expires,
                });
            }
            DeviceStatus::AccessDenied => {
                finish(&spinner);
                return Err(AuthNeeded(format!(
                    "the sign-in was denied in the browser; nothing was saved. If that was a \
                     mistake, {again}"
                ))
                .into());
            }
            DeviceStatus::ExpiredToken => {
                finish(&spinner);
                return Err(AuthNeeded(format!(
                    "the code {} expired before anyone approved it; nothing was saved. {}",
                    auth.user_code,
                    capitalized(&again)
                ))
                .into());
            }
            DeviceStatus::InvalidGrant => {
                finish(&spinner);
                return Err(AuthNeeded(format!("{}; nothing was saved", answer.message)).into());
            }
        }
    }
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Tells the person where to go, on stderr; a QR code on a terminal.
fn show(provider: &str, auth: &DeviceAuthorization) {
    use std::io::IsTerminal;
    let minutes = auth.expires_in.div_ceil(60);
    eprintln!(
        "To sign in with {provider}, open this page on any device (a phone will do):\n\n  \
         {}\n\nand enter the code:\n\n  {}\n\nOr open this link, which has the code filled in:\n\n  {}\n",
        auth.verification_uri, auth.user_code, auth.verification_uri_complete
    );
    if std::io::stderr().is_terminal()
        && let Some(qr) = qr_code(
            &auth.verification_uri_complete,
            std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
        )
    {
        eprintln!("{qr}\n");
    }
    eprintln!(
        "The code expires in {minutes} minute{}.",
        if minutes == 1 { "" } else { "s" }
    );
}

/// The URL as a QR code of Unicode half blocks (two modules per character
/// cell), with its quiet zone. With colour, it is drawn black on white
/// whatever the terminal's theme; without (`NO_COLOR`), light blocks on the
/// terminal's background, which suits the usual dark terminals.
pub fn qr_code(url: &str, no_color: bool) -> Option<String> {
    use qrcode::render::unicode::Dense1x2;
    let code =
        qrcode::QrCode::with_error_correction_level(url.as_bytes(), qrcode::EcLevel::L).ok()?;
    let art = if no_color {
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build()
    } else {
        code.render::<Dense1x2>().quiet_zone(true).build()
    };
    Some(if no_color {
        art
    } else {
        art.lines()
            .map(|l| format!("\x1b[30;107m{l}\x1b[0m"))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::ffi::OsString;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn ssh_without_x_forwarding_has_no_browser() {
        let e = env(&[("SSH_CONNECTION", "10.0.0.1 5000 10.0.0.2 22")]);
        assert!(why_no_browser(&e).unwrap().contains("SSH"));
        let e = env(&[("SSH_CONNECTION", "x"), ("DISPLAY", "localhost:10.0")]);
        assert_eq!(why_no_browser(&e), None, "X forwarding");
        let e = env(&[("SSH_CONNECTION", "x"), ("BROWSER", "w3m")]);
        assert_eq!(why_no_browser(&e), None, "a browser named in BROWSER");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_without_a_display_has_no_browser() {
        assert!(why_no_browser(&env(&[])).unwrap().contains("DISPLAY"));
        assert_eq!(
            why_no_browser(&env(&[("WAYLAND_DISPLAY", "wayland-0")])),
            None
        );
        assert_eq!(why_no_browser(&env(&[("DISPLAY", ":0")])), None);
    }

    #[test]
    fn qr_code_is_half_blocks_with_a_quiet_zone() {
        let url = "https://infra.example.com/device?user_code=WDJB-MJHT";
        let plain = qr_code(url, true).unwrap();
        let lines: Vec<&str> = plain.lines().collect();
        let width = lines[0].chars().count();
        // Version 3 at level L: 29 modules + 2 * 4 quiet zone = 37 columns, 19 rows.
        assert_eq!(width, 37, "{plain}");
        assert_eq!(lines.len(), 19);
        assert!(lines.iter().all(|l| l.chars().count() == width));
        assert!(
            plain
                .chars()
                .all(|c| matches!(c, ' ' | '\u{2580}' | '\u{2584}' | '\u{2588}' | '\n'))
        );
        // Without colour the quiet zone is light: full blocks on a dark terminal.
        assert!(lines[0].chars().all(|c| c == '\u{2588}'));
        let coloured = qr_code(url, false).unwrap();
        assert!(
            coloured
                .lines()
                .all(|l| l.starts_with("\x1b[30;107m") && l.ends_with("\x1b[0m"))
        );
    }
}
