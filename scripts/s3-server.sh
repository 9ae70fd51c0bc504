#!/usr/bin/env bash
# Installs (once, into a cached virtual environment) and starts a real S3-compatible server on
# 127.0.0.1 for Apiary's tests: LocalStack's S3 in host mode, which enforces If-None-Match and
# If-Match atomically under concurrency. Creates the test bucket and prints the environment
# the tests need, as `export` lines:   eval "$(scripts/s3-server.sh)"
#
# Settings: APIARY_S3_PORT (default 4566), APIARY_CACHE (default ~/.cache/apiary).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port="${APIARY_S3_PORT:-4566}"
cache="${APIARY_CACHE:-$HOME/.cache/apiary}"
bucket="apiary-test"
requirements="$here/s3-requirements.txt"
log() { echo "s3-server: $*" >&2; }

# A Python 3.13 that runs (a pyenv shim for a version pyenv does not select does not).
find_python() {
  local candidates=() root
  root="${PYENV_ROOT:-$HOME/.pyenv}"
  command -v pyenv >/dev/null 2>&1 && root="$(pyenv root 2>/dev/null || echo "$root")"
  [ -d "$root/versions" ] && candidates+=("$root"/versions/3.13*/bin/python3.13)
  candidates+=(python3.13)
  for py in "${candidates[@]}"; do
    if "$py" -c 'import sys; assert sys.version_info[:2] == (3, 13)' >/dev/null 2>&1; then
      echo "$py"; return 0
    fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    log "installing Python 3.13 with pyenv"
    pyenv install -s 3.13 >&2 && { echo "$(pyenv root)/versions/$(pyenv latest 3.13)/bin/python3.13"; return 0; }
  fi
  return 1
}

healthy() {
  curl -fsS "http://127.0.0.1:$port/_localstack/health" 2>/dev/null | grep -q '"s3": "\(available\|running\)"'
}

if ! healthy; then
  stamp="$(sha256sum "$requirements" | cut -c1-12)"
  venv="$cache/s3-venv-$stamp"
  if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
    py="$(find_python)" || { log "Python 3.13 is needed for the S3 test server and was not found"; exit 1; }
    log "creating $venv with $py"
    rm -rf "$venv"
    mkdir -p "$cache"
    "$py" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$requirements" >&2
    touch "$venv/.complete"
  fi
  data="$cache/s3-data-$port"
  rm -rf "$data"; mkdir -p "$data"
  log "starting LocalStack S3 on 127.0.0.1:$port (log: $cache/s3-$port.log)"
  GATEWAY_LISTEN="127.0.0.1:$port" SERVICES=s3 EAGER_SERVICE_LOADING=1 DNS_ADDRESS=0 \
    SKIP_SSL_CERT_DOWNLOAD=1 DISABLE_EVENTS=1 LOCALSTACK_DATA_DIR="$data" \
    LOCALSTACK_VOLUME_DIR="$data/volume" TMPDIR="$data" \
    nohup "$venv/bin/python" -m localstack.runtime.main >"$cache/s3-$port.log" 2>&1 &
  for _ in $(seq 1 180); do
    healthy && break
    sleep 0.5
  done
  healthy || { log "the S3 server did not become healthy; last log lines:"; tail -20 "$cache/s3-$port.log" >&2; exit 1; }
fi

# Create the bucket (idempotent) with a plain path-style request; LocalStack accepts any
# credentials.
status="$(curl -s -o /dev/null -w '%{http_code}' -X PUT "http://127.0.0.1:$port/$bucket")"
case "$status" in
  200|409) ;;
  *) log "creating bucket $bucket failed with HTTP $status"; exit 1 ;;
esac

cat <<ENV
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
export APIARY_TEST_S3=s3://$bucket
ENV
