//! Choosing a cluster: `infra list` and `infra use` as a person and a script
//! use them, the real binary against a real `infra server`, with HOME,
//! INFRA_HOME and KUBECONFIG in a temp dir; kubectl reads the result.
//!
//! The picker runs in a real terminal: tmux (installed by tests/run.sh)
//! runs `infra use` in a detached 80x24 session on a socket of its own;
//! `send-keys` types, `capture-pane` reads the screen, polled with a
//! deadline. The pane's command ends by printing the exit code and the
//! terminal modes (`stty`), so each test sees what the person's shell
//! would be left with.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Backend, Machine, Server};
use serde_json::{Value, json};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn kubeconfig_path(m: &Machine) -> PathBuf {
    m.home().join(".kube/config")
}

/// kubectl's answer to `config current-context`.
fn current_context(m: &Machine) -> String {
    let out = Command::new("kubectl")
        .args(["config", "current-context", "--kubeconfig"])
        .arg(kubeconfig_path(m))
        .output()
        .expect("kubectl is installed");
    assert!(out.status.success(), "kubectl: {}", stderr(&out));
    stdout(&out).trim().to_string()
}

/// A server with four destinations and alice, logged in on her machine:
///
/// | destination | how                                  | alice's roles            |
/// |-------------|--------------------------------------|--------------------------|
/// | prod        | registered by its connector          | view                     |
/// | prod.web    | (namespace of prod)                  | edit; view through `sre` |
/// | stage       | created by an admin with a URL       | edit                     |
/// | new         | created by an admin, no URL yet      | view                     |
struct Setup {
    s: Server,
    m: Machine,
}

async fn setup() -> Setup {
    let s = Server::start(Backend::Sqlite).await;
    let ca = std::fs::read_to_string(s.data_dir.join("tls.crt")).unwrap();

    // prod's connector registers it: connected.
    let conn_key = s
        .ok(
            "POST",
            "/api/access-keys",
            Some(json!({"connector": true, "destination": "prod"})),
            201,
        )
        .await["accessKey"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, d) = s
        .call(
            "POST",
            "/api/destinations",
            Some(&conn_key),
            Some(json!({"name": "prod", "url": "https://127.0.0.1:6443", "ca": ca})),
        )
        .await;
    assert_eq!(status, 201, "{d}");
    assert_eq!(d["connected"], true, "{d}");
    s.ok(
        "POST",
        "/api/destinations",
        Some(json!({"name": "stage", "url": "https://127.0.0.1:6444", "ca": ca})),
        201,
    )
    .await;
    s.ok(
        "POST",
        "/api/destinations",
        Some(json!({"name": "new"})),
        201,
    )
    .await;

    let (alice, key) = s.user_with_key("alice").await;
    for (dest, role) in [
        ("prod", "view"),
        ("prod.web", "edit"),
        ("stage", "edit"),
        ("new", "view"),
    ] {
        s.ok(
            "POST",
            "/api/grants",
            Some(json!({"user": alice, "destination": dest, "role": role})),
            201,
        )
        .await;
    }
    let g = s
        .ok("POST", "/api/groups", Some(json!({"name": "sre"})), 201)
        .await;
    s.ok(
        "PATCH",
        &format!("/api/groups/{}/users", g["id"].as_str().unwrap()),
        Some(json!({"usersToAdd": [alice]})),
        200,
    )
    .await;
    s.ok(
        "POST",
        "/api/grants",
        Some(json!({"group": g["id"], "destination": "prod.web", "role": "view"})),
        201,
    )
    .await;

    let m = Machine::new();
    let out = m.run(&[
        "login",
        &s.host(),
        "--key",
        &key,
        "--tls-trusted-fingerprint",
        &s.fingerprint(),
    ]);
    assert!(out.status.success(), "login: {}", stderr(&out));
    Setup { s, m }
}

/// `infra list` without a terminal: tab-separated NAME, ROLE, STATUS, CURRENT.
const LIST: &str = "new\tview\tnot registered\t\n\
                    prod\tview\tconnected\t\n\
                    prod.web\tedit,view\tconnected\t\n\
                    stage\tedit\tdisconnected\t\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_use_by_name() {
    let Setup { mut s, m } = setup().await;

    assert_eq!(m.ok(&["list"]), LIST);
    let rows: Value = serde_json::from_str(&m.ok(&["list", "--format", "json"])).unwrap();
    let rows = rows.as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["new", "prod", "prod.web", "stage"]);
    let web = &rows[2];
    assert_eq!(web["roles"], json!(["edit", "view"]));
    assert_eq!(web["destination"], "prod");
    assert_eq!(web["namespace"], "web");
    assert_eq!(web["context"], "infra:prod.web");
    assert_eq!(web["connected"], true);
    assert_eq!(web["current"], false);
    assert_eq!(rows[0]["status"], "not registered");
    assert_eq!(rows[0]["registered"], false);
    assert_eq!(rows[3]["connected"], false);
    let yaml = m.ok(&["list", "--format", "yaml"]);
    assert!(yaml.contains("name: prod.web"), "{yaml}");

    // Switch by name; kubectl sees it, and `infra list` marks it.
    let out = m.run(&["use", "prod.web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim(), "Switched to infra:prod.web");
    assert_eq!(stdout(&out), "", "stdout is for data");
    assert_eq!(current_context(&m), "infra:prod.web");
    assert_eq!(
        m.ok(&["list"]),
        LIST.replace("edit,view\tconnected\t", "edit,view\tconnected\t*")
    );
    let rows: Value = serde_json::from_str(&m.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(rows[2]["current"], true);
    m.ok(&["use", "infra:stage"]);
    assert_eq!(current_context(&m), "infra:stage");

    // An unknown name: the close ones, and nothing changes.
    let before = std::fs::read(kubeconfig_path(&m)).unwrap();
    let out = m.run(&["use", "prd.web"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no cluster prd.web that you can reach")
            && stderr(&out).contains("did you mean prod.web?"),
        "{}",
        stderr(&out)
    );
    let out = m.run(&["use", "kube-system"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("you can reach: new, prod, prod.web, stage"),
        "{}",
        stderr(&out)
    );
    // Granted, but no connector yet: nothing to switch to.
    let out = m.run(&["use", "new"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("new is not registered yet"),
        "{}",
        stderr(&out)
    );
    let out = m.run(&["use", "pr od"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(std::fs::read(kubeconfig_path(&m)).unwrap(), before);

    // Granted after login: the entries are refreshed, then switched to.
    let ca = std::fs::read_to_string(s.data_dir.join("tls.crt")).unwrap();
    s.ok(
        "POST",
        "/api/destinations",
        Some(json!({"name": "dev", "url": "https://127.0.0.1:6445", "ca": ca})),
        201,
    )
    .await;
    let alice = s.ok("GET", "/api/users?name=alice", None, 200).await["items"][0]["id"].clone();
    s.ok(
        "POST",
        "/api/grants",
        Some(json!({"user": alice, "destination": "dev.api", "role": "edit"})),
        201,
    )
    .await;
    let out = m.run(&["use", "dev.api"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Switched to infra:dev.api"),
        "{}",
        stderr(&out)
    );
    assert_eq!(current_context(&m), "infra:dev.api");
    let view = Command::new("kubectl")
        .args(["config", "view", "-o", "json", "--kubeconfig"])
        .arg(kubeconfig_path(&m))
        .output()
        .unwrap();
    let view: Value = serde_json::from_slice(&view.stdout).unwrap();
    let ctx = view["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "infra:dev.api")
        .expect("the new context");
    assert_eq!(ctx["context"]["namespace"], "api");

    // A context already in the kubeconfig needs no server.
    s.stop();
    let out = m.run(&["use", "prod"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(current_context(&m), "infra:prod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_without_a_terminal_prints_the_list_and_a_hint() {
    let Setup { s: _s, m } = setup().await;
    m.ok(&["use", "stage"]);
    let before = std::fs::read(kubeconfig_path(&m)).unwrap();
    let out = m.run(&["use"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        LIST.replace("edit\tdisconnected\t", "edit\tdisconnected\t*")
    );
    assert!(
        stderr(&out).contains("infra use DEST[.NAMESPACE]"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(kubeconfig_path(&m)).unwrap(), before);
}

// ---------------------------------------------------------------------------
// In a real terminal

/// A tmux server of its own, with one detached session.
struct Tmux {
    socket: String,
    session: String,
}

/// Quotes for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Tmux {
    /// Runs `command` (argv) with `env` in a new detached session of the
    /// given size. When the command ends the pane shows `exit=CODE` and the
    /// terminal's canonical/echo modes, and stays open.
    fn start(command: &[String], env: &[(&str, String)], width: u16, height: u16) -> Tmux {
        let suffix = common::random_suffix();
        let t = Tmux {
            socket: format!("infra-test-{suffix}"),
            session: format!("t{suffix}"),
        };
        let mut line = String::from("env -u INFRA_ACCESS_KEY -u INFRA_SERVER -u INFRA_PASSWORD");
        line.push_str(" -u NO_COLOR");
        for (k, v) in env {
            line.push_str(&format!(" {k}={}", sh_quote(v)));
        }
        for a in command {
            line.push(' ');
            line.push_str(&sh_quote(a));
        }
        line.push_str(
            "; rc=$?; modes=$(stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon -e echo -e -echo \
             | tr '\\n' ,); printf 'exit=%s modes=%s end\\n' \"$rc\" \"$modes\"; exec sleep 600",
        );
        let out = t.tmux(&[
            "new-session",
            "-d",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            "-s",
            &t.session,
            &line,
        ]);
        assert!(out.status.success(), "tmux new-session: {}", stderr(&out));
        t
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux is installed (tests/run.sh installs it)")
    }

    /// The visible screen, one string per row.
    fn screen(&self) -> Vec<String> {
        let out = self.tmux(&["capture-pane", "-p", "-t", &self.session]);
        assert!(out.status.success(), "capture-pane: {}", stderr(&out));
        stdout(&out)
            .lines()
            .map(|l| l.trim_end().to_string())
            .collect()
    }

    /// Looks at the screen until `ok` holds; fails after `common::WAIT`
    /// (and dropping `self` then shows the screen).
    fn wait_for(&self, what: &str, ok: impl Fn(&[String]) -> bool) -> Vec<String> {
        common::wait_for_blocking(what, || Some(self.screen()).filter(|s| ok(s)))
    }

    /// Waits for the picker's help line.
    fn wait_for_picker(&self) -> Vec<String> {
        self.wait_for("the picker", |s| {
            s.iter().any(|l| l.contains("STATUS")) && s.iter().any(|l| l.contains("Enter: switch"))
        })
    }

    /// Waits for the command to end; returns its exit code and the screen.
    fn wait_for_exit(&self) -> (i32, Vec<String>) {
        let screen = self.wait_for("the command to end", |s| {
            s.iter()
                .any(|l| l.starts_with("exit=") && l.ends_with(" end"))
        });
        let line = screen.iter().find(|l| l.starts_with("exit=")).unwrap();
        let code = line["exit=".len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        (code, screen)
    }

    /// Presses keys (tmux key names: Enter, Escape, C-c, Down...).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.session];
        args.extend_from_slice(keys);
        let out = self.tmux(&args);
        assert!(out.status.success(), "send-keys: {}", stderr(&out));
    }

    /// Types text as it is.
    fn type_text(&self, text: &str) {
        let out = self.tmux(&["send-keys", "-t", &self.session, "-l", text]);
        assert!(out.status.success(), "send-keys: {}", stderr(&out));
    }

    fn format(&self, f: &str) -> String {
        let out = self.tmux(&["display-message", "-p", "-t", &self.session, f]);
        stdout(&out).trim().to_string()
    }

    /// Whether the pane shows the alternate screen.
    fn alternate_on(&self) -> bool {
        self.format("#{alternate_on}") == "1"
    }

    /// Sends a signal to the pane's command (the shell's child).
    fn signal_command(&self, signal: &str) {
        let shell = self.format("#{pane_pid}");
        let out = Command::new("ps")
            .args(["-o", "pid=", "--ppid", &shell])
            .output()
            .expect("ps is installed (tests/run.sh installs procps)");
        let pids: Vec<String> = stdout(&out).split_whitespace().map(String::from).collect();
        assert_eq!(
            pids.len(),
            1,
            "one command under the pane's shell: {pids:?}"
        );
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pids[0]])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn resize(&self, width: u16, height: u16) {
        let out = self.tmux(&[
            "resize-window",
            "-t",
            &self.session,
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
        ]);
        assert!(out.status.success(), "resize-window: {}", stderr(&out));
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- the tmux pane:\n{}", self.screen().join("\n"));
        }
        let _ = self.tmux(&["kill-server"]);
    }
}

/// The environment `infra` gets on the machine (as `Machine::cmd` sets it).
fn machine_env(m: &Machine) -> Vec<(&'static str, String)> {
    let p = |p: &Path| p.display().to_string();
    let mut env = vec![
        ("HOME", p(m.home())),
        ("INFRA_HOME", p(&m.infra_home())),
        ("XDG_CONFIG_HOME", p(&m.home().join(".config"))),
        ("XDG_DATA_HOME", p(&m.home().join(".local/share"))),
        ("KUBECONFIG", p(&kubeconfig_path(m))),
    ];
    if let Ok(bus) = std::env::var("DBUS_SESSION_BUS_ADDRESS") {
        env.push(("DBUS_SESSION_BUS_ADDRESS", bus));
    }
    env
}

fn infra_use(m: &Machine, width: u16, height: u16) -> Tmux {
    Tmux::start(
        &[common::bin().display().to_string(), "use".into()],
        &machine_env(m),
        width,
        height,
    )
}

/// The terminal is as the shell needs it: line editing and echo on, and
/// the normal screen back.
fn assert_terminal_restored(t: &Tmux, screen: &[String]) {
    let line = screen.iter().find(|l| l.starts_with("exit=")).unwrap();
    assert!(
        line.ends_with(" modes=icanon,echo, end"),
        "raw mode was left on: {line}"
    );
    assert!(!t.alternate_on(), "still on the alternate screen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picker_filters_and_switches() {
    let Setup { s: _s, m } = setup().await;
    m.ok(&["use", "stage"]);
    let t = infra_use(&m, 80, 24);
    let screen = t.wait_for_picker();
    assert_eq!(t.format("#{window_width}x#{window_height}"), "80x24");
    assert!(t.alternate_on());
    // The list, the current one marked and selected, before any key.
    assert!(
        screen[0].contains("Switch kubectl to a cluster on"),
        "{screen:#?}"
    );
    let rows: Vec<&str> = screen[3..7].iter().map(String::as_str).collect();
    assert_eq!(
        rows,
        [
            "    new       view       not registered",
            "    prod      view       connected",
            "    prod.web  edit,view  connected",
            "> * stage     edit       disconnected",
        ],
        "{screen:#?}"
    );
    assert!(
        screen[1].starts_with('>') && screen[1].ends_with("4/4"),
        "{screen:#?}"
    );
    assert!(screen[23].contains("j/k: move"), "{screen:#?}");

    t.type_text("web");
    let screen = t.wait_for("the filter", |s| {
        s[1].starts_with("> web") && s[1].ends_with("1/4")
    });
    assert_eq!(
        screen[3], ">   prod.web  edit,view  connected",
        "{screen:#?}"
    );
    assert!(screen[23].contains("letters: filter"), "{screen:#?}");
    t.keys(&["Enter"]);
    let (code, screen) = t.wait_for_exit();
    assert_eq!(code, 0, "{screen:#?}");
    assert!(
        screen.iter().any(|l| l == "Switched to infra:prod.web"),
        "{screen:#?}"
    );
    assert_terminal_restored(&t, &screen);
    assert_eq!(current_context(&m), "infra:prod.web");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_the_picker_changes_nothing() {
    let Setup { s: _s, m } = setup().await;
    m.ok(&["use", "prod"]);
    let before = std::fs::read(kubeconfig_path(&m)).unwrap();
    // Esc; q with an empty filter; Ctrl-C; q once typing is a letter; and
    // SIGTERM from outside.
    let cases: [(&str, &[&str]); 5] = [
        ("", &["Down", "Escape"]),
        ("", &["j", "q"]),
        ("st", &["C-c"]),
        ("pro", &["q"]),
        ("", &[]),
    ];
    for (text, keys) in cases {
        let t = infra_use(&m, 80, 24);
        t.wait_for_picker();
        if !text.is_empty() {
            t.type_text(text);
            t.wait_for("the filter", |s| s[1].starts_with(&format!("> {text}")));
        }
        if keys.is_empty() {
            t.signal_command("TERM");
        } else {
            t.keys(keys);
        }
        if text == "pro" {
            // q went to the filter; the picker is still open. Esc leaves.
            t.wait_for("q in the filter", |s| s[1].starts_with("> proq"));
            assert!(t.alternate_on());
            t.keys(&["Escape"]);
        }
        let (code, screen) = t.wait_for_exit();
        assert_eq!(code, 130, "{keys:?}: {screen:#?}");
        assert!(screen.iter().any(|l| l == "cancelled"), "{screen:#?}");
        assert_terminal_restored(&t, &screen);
        assert_eq!(
            std::fs::read(kubeconfig_path(&m)).unwrap(),
            before,
            "{keys:?} changed the kubeconfig"
        );
    }
    assert_eq!(current_context(&m), "infra:prod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picker_follows_resizes() {
    let Setup { s: _s, m } = setup().await;
    let t = infra_use(&m, 80, 24);
    t.wait_for_picker();

    t.resize(50, 12);
    let screen = t.wait_for("the picker at 50x12", |s| {
        s.len() == 12 && s[11].contains("Up/Down") && s[1].len() == 49
    });
    assert!(screen[1].ends_with("4/4"), "{screen:#?}");
    assert_eq!(
        screen[3], ">   new       view       not registered",
        "{screen:#?}"
    );
    assert_eq!(
        screen[6], "    stage     edit       disconnected",
        "{screen:#?}"
    );
    assert!(screen.iter().all(|l| l.len() <= 50), "{screen:#?}");

    t.resize(100, 30);
    let screen = t.wait_for("the picker at 100x30", |s| {
        s.len() == 30 && s[29].contains("Up/Down") && s[1].len() == 99
    });
    assert_eq!(
        screen[5], "    prod.web  edit,view  connected",
        "{screen:#?}"
    );

    // Still working: filter and choose.
    t.type_text("stage");
    t.wait_for("the filter", |s| s[1].starts_with("> stage"));
    t.keys(&["Enter"]);
    let (code, screen) = t.wait_for_exit();
    assert_eq!(code, 0, "{screen:#?}");
    assert_terminal_restored(&t, &screen);
    assert_eq!(current_context(&m), "infra:stage");
}

/// A panic while the picker is open (forced in the real binary with
/// `INFRA_TUI_PANIC_FOR_TESTS`) restores the terminal before the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_in_the_picker_restores_the_terminal() {
    let Setup { s: _s, m } = setup().await;
    let mut env = machine_env(&m);
    env.push(("INFRA_TUI_PANIC_FOR_TESTS", "1".into()));
    env.push(("RUST_BACKTRACE", "0".into()));
    let t = Tmux::start(
        &[common::bin().display().to_string(), "use".into()],
        &env,
        80,
        24,
    );
    let (code, screen) = t.wait_for_exit();
    assert_ne!(code, 0, "a panic is an error: {screen:#?}");
    // The message is on the normal screen: the terminal was restored first.
    assert!(
        screen
            .iter()
            .any(|l| l.contains("a panic while the picker is open")),
        "{screen:#?}"
    );
    assert_terminal_restored(&t, &screen);
}
