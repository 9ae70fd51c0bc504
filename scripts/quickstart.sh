#!/usr/bin/env bash
# The quick start: on a local folder (./apiary-data, or APIARY_STORAGE), create the tutorial's
# frame and show it. Safe to run again: creates are idempotent.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --quiet -p apiary-node
apiary() { "${CARGO_TARGET_DIR:-target}/debug/apiary" "$@"; }
apiary create hive analytics
apiary create box analytics.events
apiary create frame analytics.events.clicks \
  --schema 'event_id:int64,user_id:utf8,page:utf8,duration_ms:int64,country:utf8' \
  --partition-by country
echo
apiary list
echo
apiary list analytics.events
echo
apiary describe analytics.events.clicks
