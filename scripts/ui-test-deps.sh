#!/usr/bin/env bash
# Installs (once, from the npm registry into a cached folder) playwright-core, which drives
# Debian's Chromium in the console's browser test, and prints the environment that test
# needs as `export` lines:   eval "$(scripts/ui-test-deps.sh)"
# (No browser is downloaded: the test uses /usr/bin/chromium, installed by test-deps.sh.)
#
# Settings: APIARY_CACHE (default ~/.cache/apiary), CHROMIUM (default /usr/bin/chromium).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${APIARY_CACHE:-$HOME/.cache/apiary}"
package="$here/../apiary-console/ui-tests/package.json"
log() { echo "ui-test-deps: $*" >&2; }

command -v npm >/dev/null 2>&1 || { log "npm (Node.js) is needed: apt-get install nodejs npm"; exit 1; }
chromium="${CHROMIUM:-/usr/bin/chromium}"
[ -x "$chromium" ] || { log "Chromium is needed at $chromium: apt-get install chromium"; exit 1; }
stamp="$(sha256sum "$package" | cut -c1-12)"
dir="$cache/playwright-$stamp"
if [ ! -f "$dir/.complete" ]; then
  log "installing playwright-core into $dir"
  rm -rf "$dir"; mkdir -p "$dir"
  cp "$package" "$dir/package.json"
  (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --silent >&2)
  touch "$dir/.complete"
fi
echo "export APIARY_PLAYWRIGHT=$dir/node_modules"
echo "export CHROMIUM=$chromium"
