#!/usr/bin/env bash
# Installs (once, from the npm registry into a cached folder) and starts the Azure Blob
# emulator, Azurite, on 127.0.0.1 for Apiary's tests; creates the test container and prints
# the environment the tests need, as `export` lines:   eval "$(scripts/azure-server.sh)"
#
# Settings: APIARY_AZURE_PORT (default 10000), APIARY_CACHE (default ~/.cache/apiary).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port="${APIARY_AZURE_PORT:-10000}"
cache="${APIARY_CACHE:-$HOME/.cache/apiary}"
container="apiary-test"
package="$here/azure-package.json"
log() { echo "azure-server: $*" >&2; }

command -v npm >/dev/null 2>&1 || { log "npm (Node.js) is needed for the Azure test server: apt-get install nodejs npm"; exit 1; }
stamp="$(sha256sum "$package" | cut -c1-12)"
dir="$cache/azurite-$stamp"
if [ ! -f "$dir/.complete" ]; then
  log "installing Azurite into $dir"
  rm -rf "$dir"; mkdir -p "$dir"
  cp "$package" "$dir/package.json"
  (cd "$dir" && npm install --no-audit --no-fund --silent >&2)
  touch "$dir/.complete"
fi

# The emulator's well-known development account (public, documented by Microsoft).
key="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
url="http://127.0.0.1:$port/devstoreaccount1"
answers() { curl -s -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; }

if ! answers; then
  data="$cache/azure-data-$port"
  rm -rf "$data"; mkdir -p "$data"
  log "starting Azurite on 127.0.0.1:$port (log: $cache/azure-$port.log)"
  nohup "$dir/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$port" \
    --location "$data" --skipApiVersionCheck --loose >"$cache/azure-$port.log" 2>&1 &
  for _ in $(seq 1 120); do
    answers && break
    sleep 0.25
  done
  answers || { log "Azurite did not start; last log lines:"; tail -20 "$cache/azure-$port.log" >&2; exit 1; }
fi

(cd "$dir" && CONNECTION="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=$key;BlobEndpoint=$url;" \
  node -e '
    const { BlobServiceClient } = require("@azure/storage-blob");
    BlobServiceClient.fromConnectionString(process.env.CONNECTION)
      .getContainerClient(process.argv[1]).createIfNotExists()
      .catch((e) => { console.error("azure-server: " + e.message); process.exit(1); });
  ' "$container")

cat <<ENV
export AZURE_STORAGE_USE_EMULATOR=true
export AZURITE_BLOB_STORAGE_URL=http://127.0.0.1:$port
export APIARY_TEST_AZURE=az://$container/tests
ENV
