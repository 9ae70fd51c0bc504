#!/usr/bin/env bash
# Builds the Python binding into a virtual environment (created once, cached by its pinned
# requirements) and runs its pytest suite. Expects the S3 test server's environment
# (scripts/test.sh provides it) and the `apiary` binary of the debug build.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cache="${APIARY_CACHE:-$HOME/.cache/apiary}"
requirements=apiary-python/requirements-test.txt
stamp="$(sha256sum "$requirements" | cut -c1-12)"
venv="$cache/py-venv-$stamp"
log() { echo "python-tests: $*" >&2; }

if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  log "creating $venv"
  rm -rf "$venv"
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  touch "$venv/.complete"
fi
export VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH"
target="${CARGO_TARGET_DIR:-$PWD/target}"
export APIARY_BIN="${APIARY_BIN:-$target/debug/apiary}"
[ -x "$APIARY_BIN" ] || cargo build -p apiary-node --bin apiary

log "building the apiary package (maturin develop)"
(cd apiary-python && maturin develop --quiet)
log "running pytest"
cd apiary-python
exec python -m pytest -p no:cacheprovider "$@"
