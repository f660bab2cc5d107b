#!/usr/bin/env bash
# How long kubectl waits for its credential, `infra tokens create` (the exec
# plugin kubectl runs before every request), median wall time with hyperfine:
#
#   warm   the token comes from the cache file: against `cat` of that same
#          file (the floor for "start a process, read a file, print") and
#          against gke-gcloud-auth-plugin answering from its own cache file
#          (~/.kube/gke_gcloud_auth_plugin_cache), when it is installed;
#   cold   the cached token is inside the margin: a locked refresh that mints
#          a new one with POST /api/tokens over loopback TLS.
#
# Targets: warm within 1.5x of cat and at least 3x faster than
# gke-gcloud-auth-plugin; cold under 15 ms.
#
#   benches/exec_plugin.sh            (builds target/release/infra first)
#
# Everything runs in a temp dir against a throwaway `infra server` on
# 127.0.0.1, stopped at the end. The key is kept in a file (INFRA_NO_KEYRING),
# so no Secret Service is involved; kubectl would also set
# KUBERNETES_EXEC_INFO (with the cluster's CA, ~1.5 kB), and so does this.
#
# hyperfine -N runs every call as a child of hyperfine itself, one process
# asking again and again: the plugin takes the second call for kubectl's
# retry after a 401 (see token_cache::judge) and mints once during the
# warm-up; from then on the token is one minted for a retry, which nobody
# suspects, and each call is open, read, getppid, close. A real kubectl is a
# new process each time, which adds a readlink of its executable and a
# 19-byte pwrite to record it.
#
# Knobs: INFRA_BIN (skip the build, use this binary), RUNS (default 2000),
# COLD_RUNS (default 300), WARMUP (default 200).
set -euo pipefail

REPO="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
RUNS="${RUNS:-2000}"
COLD_RUNS="${COLD_RUNS:-300}"
WARMUP="${WARMUP:-200}"
die() { printf 'exec_plugin.sh: %s\n' "$*" >&2; exit 1; }
say() { printf '\n== %s\n' "$*" >&2; }

if ! command -v hyperfine >/dev/null; then
  [[ "$(id -u)" == 0 ]] || die "hyperfine is missing: apt-get install hyperfine"
  say "installing hyperfine"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q hyperfine >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q hyperfine >/dev/null; }
fi
command -v curl >/dev/null || die "curl is missing"
command -v python3 >/dev/null || die "python3 is missing"

if [[ -n "${INFRA_BIN:-}" ]]; then
  BIN="$(readlink -f "$INFRA_BIN")"
else
  say "cargo build --release"
  (cd "$REPO" && cargo build --release --quiet)
  BIN="$REPO/target/release/infra"
fi

T="$(mktemp -d "${TMPDIR:-/tmp}/infra-bench.XXXXXXXX")"
server_pid=
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A person's machine, in the temp dir; hyperfine passes this environment on.
export HOME="$T/home" INFRA_HOME="$T/home/.config/infra" INFRA_CACHE_DIR="$T/cache"
export KUBECONFIG="$T/home/.kube/config" XDG_CONFIG_HOME="$T/home/.config"
export INFRA_NO_KEYRING=1
unset INFRA_ACCESS_KEY INFRA_SERVER INFRA_TOKEN_MARGIN
mkdir -p "$HOME/.kube"

say "throwaway infra server"
KEY="BenchKey01.BenchSecret0123456789abc"
INFRA_ADMIN_ACCESS_KEY="$KEY" INFRA_LOG=warn "$BIN" server --listen 127.0.0.1:0 \
  --metrics-listen 127.0.0.1:0 --data-dir "$T/data" </dev/null >"$T/server.log" 2>&1 &
server_pid=$!
URL=
for _ in $(seq 300); do
  URL="$(sed -n 's/.*listening on \(https:[^ ]*\).*/\1/p' "$T/server.log" | head -n 1)"
  [[ -n "$URL" ]] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$T/server.log" >&2; die "the server exited"; }
  sleep 0.1
done
[[ -n "$URL" ]] || { cat "$T/server.log" >&2; die "the server did not start"; }
HOST="${URL#https://}"
FP="$(sed -n 's/^TLS certificate SHA-256 fingerprint: //p' "$T/server.log" | head -n 1)"
VER="$("$BIN" --version | awk '{print $2}')"
api() {
  curl -sS --fail-with-body --cacert "$T/data/tls.crt" -H "Infra-Version: $VER" \
    -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    -X "$1" "$URL$2" ${3:+-d "$3"}
}
api POST /api/destinations '{"name":"prod","url":"https://127.0.0.1:6443"}' >/dev/null
ADMIN_ID="$(api GET '/api/users?name=admin' | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')"
api POST /api/grants "{\"user\":\"$ADMIN_ID\",\"destination\":\"prod\",\"role\":\"view\"}" >/dev/null
"$BIN" login "$HOST" --key "$KEY" --tls-trusted-fingerprint "$FP" 2>/dev/null

# What kubectl runs: the command `infra login` wrote into the kubeconfig
# (infra-credential beside infra), and for comparison the full CLI.
CMD="$(kubectl config view -o jsonpath='{.users[?(@.name=="infra:prod")].user.exec.command}')"
[[ -x "$CMD" ]] || die "no exec command for infra:prod in the kubeconfig ($CMD)"
PLUGIN=("$CMD" tokens create --server "$HOST" --destination prod)
FULL=("$BIN" tokens create --server "$HOST" --destination prod)
# What kubectl puts in the plugin's environment (provideClusterInfo: true).
CA_B64="$(base64 -w0 <"$T/data/tls.crt")"
export KUBERNETES_EXEC_INFO="{\"kind\":\"ExecCredential\",\"apiVersion\":\"client.authentication.k8s.io/v1\",\"spec\":{\"cluster\":{\"server\":\"https://127.0.0.1:6443\",\"certificate-authority-data\":\"$CA_B64\"},\"interactive\":false}}"

"${PLUGIN[@]}" >"$T/first.json" || die "the first (cold) call failed"
CACHE_FILE="$(ls "$INFRA_CACHE_DIR"/*.token)"
TOKEN="$(sed -n 2p "$CACHE_FILE")"
grep -q "$TOKEN" "$T/first.json" || die "the plugin did not print the cached token"
grep -q '"apiVersion":"client.authentication.k8s.io/v1"' "$T/first.json" || die "not v1"
"${PLUGIN[@]}" | grep -q "$TOKEN" || die "the warm call did not print the cached token"

# gke-gcloud-auth-plugin answering from its cache: the file beside the
# kubeconfig, valid while current_context matches the kubeconfig's and the
# token is not about to expire; extra_args are the flags it was run with.
GKE=()
if command -v gke-gcloud-auth-plugin >/dev/null; then
  ctx="$(python3 - "$KUBECONFIG" <<'PY'
import re, sys
m = re.search(r'^current-context:\s*"?([^"\n]*)"?\s*$', open(sys.argv[1]).read(), re.M)
print(m.group(1) if m else "")
PY
)"
  exp="$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)"
  printf '{"current_context":"%s","access_token":"ya29.%s","token_expiry":"%s","extra_args":""}' \
    "$ctx" "${TOKEN:0:200}" "$exp" >"$HOME/.kube/gke_gcloud_auth_plugin_cache"
  chmod 600 "$HOME/.kube/gke_gcloud_auth_plugin_cache"
  gke="$(readlink -f "$(command -v gke-gcloud-auth-plugin)")"
  # Without gcloud on PATH it can only answer from the cache.
  if PATH=/nonexistent "$gke" 2>/dev/null | grep -q "ya29.${TOKEN:0:200}"; then
    GKE=("$gke")
  else
    say "gke-gcloud-auth-plugin does not answer from its cache here; leaving it out"
  fi
else
  say "gke-gcloud-auth-plugin is not installed; leaving it out"
fi

say "warm path ($RUNS runs, $WARMUP warm-up)"
cmds=("cat $CACHE_FILE" "${PLUGIN[*]}" "${FULL[*]}")
((${#GKE[@]})) && cmds+=("${GKE[0]}")
hyperfine -N --style basic --warmup "$WARMUP" --runs "$RUNS" --export-json "$T/warm.json" \
  --output pipe "${cmds[@]}" >&2

say "cold path ($COLD_RUNS runs: every call mints, INFRA_TOKEN_MARGIN=100000)"
INFRA_TOKEN_MARGIN=100000 hyperfine -N --style basic --warmup 10 --runs "$COLD_RUNS" \
  --export-json "$T/cold.json" --output pipe "${PLUGIN[*]}" >&2
METRICS="$(sed -n 's/^metrics on \(http:[^ ]*\).*/\1/p' "$T/server.log" | head -n 1)"
minted="$(curl -sS "$METRICS" | sed -n 's/^infra_tokens_minted_total //p')"

python3 - "$T/warm.json" "$T/cold.json" "${minted:-?}" <<'PY'
import json, sys
warm = json.load(open(sys.argv[1]))["results"]
cold = json.load(open(sys.argv[2]))["results"][0]
minted = sys.argv[3]
ms = lambda r: r["median"] * 1000
cat, infra, full = warm[0], warm[1], warm[2]
gke = warm[3] if len(warm) > 3 else None
print()
print(f"{'':34} {'median':>9} {'mean':>9} {'min':>9}")
def row(name, r):
    print(f"{name:34} {ms(r):7.3f}ms {r['mean']*1000:7.3f}ms {r['min']*1000:7.3f}ms")
row("cat (cache file)", cat)
row("kubeconfig's command (warm)", infra)
row("infra tokens create (warm, full)", full)
if gke:
    row("gke-gcloud-auth-plugin (cache)", gke)
row("infra tokens create (cold, mint)", cold)
print()
ok = lambda b: "ok" if b else "MISSED"
r = ms(infra) / ms(cat)
print(f"warm / cat:  {r:5.2f}x   (target <= 1.5x)  {ok(r <= 1.5)}")
print(f"full CLI / cat: {ms(full) / ms(cat):5.2f}x   (the whole infra executable, for comparison)")
if gke:
    g = ms(gke) / ms(infra)
    print(f"gke / warm:  {g:5.2f}x   (target >= 3x)    {ok(g >= 3)}")
else:
    print("gke / warm:  n/a (gke-gcloud-auth-plugin left out)")
print(f"cold:        {ms(cold):5.2f}ms  (target < 15 ms)  {ok(ms(cold) < 15)}")
print(f"tokens minted by the server: {minted}")
PY
