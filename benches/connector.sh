#!/usr/bin/env bash
# Runs the connector benchmark (benches/connector.rs): GET /version straight
# to a stand-in API server, through nginx, and through `infra connector`.
# Installs Debian's nginx-light if nginx is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nginx-light >/dev/null
fi
exec cargo bench --bench connector "$@"
