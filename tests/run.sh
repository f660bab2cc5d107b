#!/usr/bin/env bash
# Runs every test of infra, on a fresh Debian 12 machine, as root or as a user
# with sudo, from any directory:
#
#   tests/run.sh [ARGS FOR cargo test...]      e.g. tests/run.sh server_
#
# What it does:
#   1. installs missing Debian packages (postgresql, gnome-keyring,
#      libsecret-tools, dbus, tmux, procps, chromium, man-db; nodejs/npm only if there is no node;
#      Node >= 20.18 is needed; shellcheck; python3-venv) and `npm ci` in
#      tests/oidc when its node_modules doesn't match package-lock.json; the
#      Python `kubernetes` client (tests/list_pods.py) and asciinema (plays recorded sessions) into the tests' own
#      venv, tests/.venv (never into the system Python);
#   2. starts a throwaway PostgreSQL cluster (as the system user `infra-test`
#      when run as root), listening on 127.0.0.1:<free port> only, trust auth,
#      fsync off;
#   3. in a private D-Bus session (dbus-run-session), starts gnome-keyring's
#      Secret Service with a throwaway, unlocked "login" keyring, and checks it
#      with secret-tool;
#   4. runs, from the repository root: cargo fmt --check, cargo clippy
#      --all-targets -- -D warnings, cargo test "$@". All three run even if one
#      fails. Exit status: cargo test's when it fails, else 1 if fmt or clippy
#      failed, else 0.
#   Everything it started is stopped and its temporary directory removed on
#   success, failure and Ctrl-C.
#
# Environment the tests get (besides the caller's):
#   INFRA_TEST_POSTGRES_URL  postgres://infra_test@127.0.0.1:<port>/postgres
#                            a superuser (so also CREATEDB, CREATEROLE); tests
#                            create their own databases from it. No password.
#   INFRA_TEST_KEYRING=1     a real, unlocked Secret Service is on the session
#                            bus (default collection = the "login" keyring;
#                            it holds one item with attribute probe=probe)
#   DBUS_SESSION_BUS_ADDRESS that private session bus (from dbus-run-session)
#   INFRA_TEST_OIDC_PROVIDER <repo>/tests/oidc/provider.mjs; start instances
#                            with `$INFRA_TEST_NODE $INFRA_TEST_OIDC_PROVIDER`
#                            (see the comment at its top)
#   INFRA_TEST_NODE          absolute path of node
#   INFRA_TEST_PYTHON        the venv's python, with the kubernetes client
#   INFRA_TEST_TMPDIR        an empty scratch directory, removed afterwards
#
# Knobs:
#   INFRA_TEST_CMD='...'     run this bash command (in the same environment)
#                            instead of the three cargo steps; its exit status
#                            is the script's. For checking this script, e.g.
#                            INFRA_TEST_CMD='psql "$INFRA_TEST_POSTGRES_URL" -c "select 1" && secret-tool lookup probe probe' tests/run.sh
#   INFRA_TEST_NO_LINT=1     skip cargo fmt and cargo clippy
#   INFRA_TEST_KEEP=1        don't remove the temporary directory (logs of
#                            postgres and gnome-keyring are in it)
#   TMPDIR                   where the temporary directory goes (default /tmp)
# shellcheck disable=SC2317,SC2012  # trap handlers; ls of fixed paths
set -euo pipefail

if [[ -t 2 ]]; then
  say() { printf '\n\033[1m==== %s ====\033[0m\n' "$*" >&2; }
else
  say() { printf '\n==== %s ====\n' "$*" >&2; }
fi
note() { printf 'run.sh: %s\n' "$*" >&2; }
die() { printf 'run.sh: ERROR: %s\n' "$*" >&2; exit 1; }

SCRIPT="$(readlink -f "${BASH_SOURCE[0]}")"
REPO="$(cd "$(dirname "$SCRIPT")/.." && pwd)"
cd "$REPO"

# ---------------------------------------------------------------------------
# Stage 2: inside dbus-run-session (this script runs itself again there).
# ---------------------------------------------------------------------------
if [[ "${_INFRA_TEST_STAGE:-}" == inner ]]; then
  unset _INFRA_TEST_STAGE
  T="$_INFRA_TEST_TMP"
  unset _INFRA_TEST_TMP
  [[ -n "${DBUS_SESSION_BUS_ADDRESS:-}" ]] || die "no DBUS_SESSION_BUS_ADDRESS inside dbus-run-session"

  say "Secret Service (gnome-keyring)"
  kr="$T/keyring"
  mkdir -p "$kr/run" "$kr/data" "$kr/config"
  chmod 700 "$kr" "$kr/run" "$kr/data" "$kr/config"
  keyring_pid=
  stop_keyring() {
    if [[ -n "$keyring_pid" ]] && kill -0 "$keyring_pid" 2>/dev/null; then
      kill "$keyring_pid" 2>/dev/null || true
      wait "$keyring_pid" 2>/dev/null || true
    fi
  }
  trap stop_keyring EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  # --unlock reads the password of the "login" keyring from stdin, creating
  # that keyring if it doesn't exist. Its files go to a throwaway XDG_DATA_HOME.
  printf 'infra-test' | env XDG_RUNTIME_DIR="$kr/run" XDG_DATA_HOME="$kr/data" XDG_CONFIG_HOME="$kr/config" \
    gnome-keyring-daemon --foreground --unlock --components=secrets >"$kr/env" 2>"$kr/log" &
  keyring_pid=$!
  has_owner() {
    dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
      org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null | grep -q 'boolean true'
  }
  for _ in $(seq 100); do
    has_owner && break
    kill -0 "$keyring_pid" 2>/dev/null || { cat "$kr/log" >&2; die "gnome-keyring-daemon exited"; }
    sleep 0.1
  done
  has_owner || { cat "$kr/log" >&2; die "gnome-keyring-daemon did not take org.freedesktop.secrets in 10 s"; }
  probe="ok-$$"
  printf '%s' "$probe" | timeout 20 secret-tool store --label='infra test probe' probe probe \
    || { cat "$kr/log" >&2; die "secret-tool store failed: the Secret Service does not work"; }
  got="$(timeout 20 secret-tool lookup probe probe || true)"
  [[ "$got" == "$probe" ]] || { cat "$kr/log" >&2; die "secret-tool lookup gave '$got', want '$probe'"; }
  note "Secret Service ok (gnome-keyring-daemon pid $keyring_pid, bus $DBUS_SESSION_BUS_ADDRESS)"
  export INFRA_TEST_KEYRING=1

  if [[ -n "${INFRA_TEST_CMD:-}" ]]; then
    say "INFRA_TEST_CMD: $INFRA_TEST_CMD"
    set +e
    bash -c "$INFRA_TEST_CMD"
    rc=$?
    set -e
    say "INFRA_TEST_CMD exited with $rc"
    exit "$rc"
  fi

  lint_failed=()
  if [[ "${INFRA_TEST_NO_LINT:-}" != 1 ]]; then
    say "cargo fmt --check"
    cargo fmt --check || lint_failed+=("cargo fmt --check")
    say "cargo clippy --all-targets -- -D warnings"
    cargo clippy --all-targets -- -D warnings || lint_failed+=("cargo clippy")
  fi

  # Every test binary runs even when an earlier one fails, so one run shows
  # every failure.
  say "cargo test --no-fail-fast $*"
  set +e
  cargo test --no-fail-fast "$@"
  rc=$?
  set -e

  if ((rc != 0)); then
    say "FAILED: cargo test (exit $rc)${lint_failed[*]:+; also failed: ${lint_failed[*]}}"
    exit "$rc"
  fi
  if ((${#lint_failed[@]})); then
    say "FAILED: ${lint_failed[*]} (cargo test passed)"
    exit 1
  fi
  say "all passed"
  exit 0
fi

# ---------------------------------------------------------------------------
# Stage 1: packages, node modules, PostgreSQL; then stage 2 in a D-Bus session.
# ---------------------------------------------------------------------------
SUDO=()
[[ "$(id -u)" == 0 ]] || SUDO=(sudo)

find_pg_bin() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [[ -n "$d" && -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]]; then
    printf '%s\n' "$d"
  elif command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    dirname "$(readlink -f "$(command -v initdb)")"
  fi
}

say "Debian packages"
missing=()
[[ -n "$(find_pg_bin)" ]] || missing+=(postgresql)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v gnome-keyring-daemon >/dev/null || missing+=(gnome-keyring)
command -v secret-tool >/dev/null || missing+=(libsecret-tools)
command -v dbus-run-session >/dev/null || missing+=(dbus-bin)
command -v dbus-send >/dev/null || missing+=(dbus-bin)
dpkg -s dbus-daemon >/dev/null 2>&1 || missing+=(dbus-daemon)
dpkg -s dbus-session-bus-common >/dev/null 2>&1 || missing+=(dbus-session-bus-common)
command -v tmux >/dev/null || missing+=(tmux)
command -v man >/dev/null || missing+=(man-db)
command -v ps >/dev/null || missing+=(procps)
command -v shellcheck >/dev/null || missing+=(shellcheck)
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v chromium >/dev/null || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  note "installing: ${missing[*]}"
  if ((${#SUDO[@]})) && ! command -v sudo >/dev/null; then
    die "not root and no sudo: can't install ${missing[*]}"
  fi
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  note "all there"
fi

PG_BIN="$(find_pg_bin)"
[[ -n "$PG_BIN" ]] || die "no initdb/pg_ctl/postgres found after installing postgresql"
NODE="$(command -v node)"
node_ok="$("$NODE" -e 'const [a,b]=process.versions.node.split(".").map(Number);console.log(a>20||(a===20&&b>=18)?1:0)')"
[[ "$node_ok" == 1 ]] || die "Node $("$NODE" --version) is too old for oidc-provider 9: need >= 20.18"

say "npm ci (tests/oidc)"
oidc="$REPO/tests/oidc"
stamp="$oidc/node_modules/.infra-test-stamp"
want_stamp="$(sha256sum "$oidc/package-lock.json" | cut -d' ' -f1) node-$("$NODE" --version)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want_stamp" ]]; then
  note "node_modules up to date"
else
  (cd "$oidc" && npm ci --no-audit --no-fund --loglevel=error)
  printf '%s\n' "$want_stamp" >"$stamp"
fi

say "Python kubernetes client and asciinema (tests/.venv)"
venv="$REPO/tests/.venv"
py_want="kubernetes==37.0.2 asciinema==2.4.0 $(python3 --version 2>&1)"
if [[ -x "$venv/bin/python" && "$(cat "$venv/.infra-test-stamp" 2>/dev/null)" == "$py_want" ]]; then
  note "venv up to date"
else
  rm -rf "$venv"
  python3 -m venv "$venv" || die "cannot make a venv in $venv (is python3-venv installed?)"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'kubernetes==37.0.2' \
    'asciinema==2.4.0' \
    || die "cannot install the Python kubernetes client and asciinema into $venv"
  printf '%s\n' "$py_want" >"$venv/.infra-test-stamp"
fi
export INFRA_TEST_PYTHON="$venv/bin/python"

say "PostgreSQL"
T="$(mktemp -d "${TMPDIR:-/tmp}/infra-test.XXXXXXXX")"
PGDATA_DIR="$T/pg/data"
PG_SOCK="$T/pg/sock"
as_pg=()

# Stage 2 runs in the background so that a signal to this script is handled at
# once (bash runs traps only between foreground commands): the handler stops
# stage 2's whole process tree (dbus-run-session, dbus-daemon, gnome-keyring,
# cargo, test binaries, providers), then PostgreSQL, then removes $T.
stage2=
descendants() {
  local p
  for p in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    descendants "$p"
    echo "$p"
  done
}
stop_stage2() {
  [[ -n "$stage2" ]] && kill -0 "$stage2" 2>/dev/null || return 0
  local pids
  pids="$(descendants "$stage2") $stage2"
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$stage2" 2>/dev/null || break
    sleep 0.2
  done
  local p
  for p in $pids; do
    kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
  done
  wait "$stage2" 2>/dev/null || true
  return 0
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_stage2
  if [[ -f "$PGDATA_DIR/postmaster.pid" ]]; then
    (cd "$T" && "${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m immediate -w -t 30 stop >/dev/null 2>&1) || true
    if [[ -f "$PGDATA_DIR/postmaster.pid" ]]; then
      local pid
      pid="$(head -n 1 "$PGDATA_DIR/postmaster.pid" 2>/dev/null || true)"
      if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
  fi
  if [[ "${INFRA_TEST_KEEP:-}" == 1 ]]; then
    note "kept $T"
  else
    rm -rf "$T"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ "$(id -u)" == 0 ]]; then
  # initdb and postgres refuse to run as root.
  PG_USER=infra-test
  if ! getent passwd "$PG_USER" >/dev/null; then
    note "creating system user $PG_USER"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "$PG_USER"
  fi
  as_pg=(runuser -u "$PG_USER" --)
  chmod 755 "$T"
  mkdir -p "$T/pg"
  chown "$PG_USER:" "$T/pg"
fi
"${as_pg[@]}" mkdir -p "$PG_SOCK"
"${as_pg[@]}" chmod 700 "$PG_SOCK"

PG_ROLE=infra_test
(cd "$T" && "${as_pg[@]}" "$PG_BIN/initdb" -D "$PGDATA_DIR" -U "$PG_ROLE" -A trust \
  -E UTF8 --no-locale --no-sync >"$T/initdb.log" 2>&1) || { cat "$T/initdb.log" >&2; die "initdb failed"; }

free_port() {
  "$NODE" -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

started=
for _ in 1 2 3 4 5; do
  PG_PORT="$(free_port)"
  "${as_pg[@]}" tee "$PGDATA_DIR/postgresql.auto.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 300
shared_buffers = 128MB
log_min_messages = warning
EOF
  if (cd "$T" && "${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$T/pg/server.log" -w -t 60 start >/dev/null); then
    started=1
    break
  fi
  note "postgres did not start on port $PG_PORT, retrying"
  tail -n 5 "$T/pg/server.log" >&2 || true
done
[[ -n "$started" ]] || { cat "$T/pg/server.log" >&2 || true; die "could not start postgres"; }

export INFRA_TEST_POSTGRES_URL="postgres://$PG_ROLE@127.0.0.1:$PG_PORT/postgres"
if command -v psql >/dev/null; then
  psql "$INFRA_TEST_POSTGRES_URL" -XAtqc 'select 1' >/dev/null || die "cannot connect to $INFRA_TEST_POSTGRES_URL"
fi
note "$("$PG_BIN/postgres" --version) at $INFRA_TEST_POSTGRES_URL (data $PGDATA_DIR)"

export INFRA_TEST_OIDC_PROVIDER="$oidc/provider.mjs"
export INFRA_TEST_NODE="$NODE"
export INFRA_TEST_TMPDIR="$T/scratch"
mkdir -p "$INFRA_TEST_TMPDIR"

# Stage 2, in the background (see stop_stage2), but with SIGINT back to its
# default so that Ctrl-C in a terminal reaches cargo as usual.
env --default-signal=INT,QUIT _INFRA_TEST_STAGE=inner _INFRA_TEST_TMP="$T" \
  dbus-run-session -- "$BASH" "$SCRIPT" "$@" </dev/null &
stage2=$!
set +e
wait "$stage2"
rc=$?
set -e
stage2=
exit "$rc"
