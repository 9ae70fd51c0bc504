#!/usr/bin/env bash
# Installs the system tools the tests use and a fresh machine may lack: curl (the S3 server's
# health checks), docker-compose (the Python one, which validates a Compose file without a
# daemon), setpriv (running a process as the image's user), tmux (the shell's tests type into a real
# terminal) and npm with Node.js (the Azure
# Blob emulator, Azurite). Debian or Ubuntu: with apt-get,
# as root or through sudo. Elsewhere it says what to install. Called by scripts/test.sh.
set -euo pipefail
log() { echo "test-deps: $*" >&2; }

# command -> Debian package
declare -A package=([curl]=curl [docker-compose]=docker-compose [setpriv]=util-linux [tmux]=tmux [npm]=npm [chromium]=chromium [promtool]=prometheus)
missing=()
for tool in curl docker-compose setpriv tmux npm chromium promtool; do
  command -v "$tool" >/dev/null || missing+=("${package[$tool]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
  log "the tests need ${missing[*]} (Debian package names); install them and run again"
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  log "the tests need: apt-get install ${missing[*]} (as root); run that and try again"
  exit 1
fi
log "installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
