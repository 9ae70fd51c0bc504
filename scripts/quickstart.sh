#!/usr/bin/env bash
# The quick start: on a local folder (./apiary-data, or APIARY_STORAGE), create the tutorial's
# frame, write 10 000 generated click events into it, and run the tutorial's queries and its
# EXPLAIN ANALYZE; then start three `apiary node` processes on the same folder, run the
# tutorial's queries distributed over them, show the EXPLAIN ANALYZE with their tasks, and
# stop the nodes. Creates are idempotent; each run appends another 10 000 events.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --quiet -p apiary-node
bin="${CARGO_TARGET_DIR:-target}/debug/apiary"
apiary() { "$bin" "$@"; }
apiary create hive analytics
apiary create box analytics.events
apiary create frame analytics.events.clicks \
  --schema 'event_id:int64,user_id:utf8,page:utf8,duration_ms:int64,country:utf8' \
  --partition-by country
# 10 000 tutorial click events as CSV (columns are matched to the frame by name).
clicks="$(mktemp --suffix=.csv)"
awk 'BEGIN {
  srand(42); split("us uk de fr jp br au ca", c, " "); split("/home /products /about /pricing /docs /blog", p, " ")
  print "event_id,user_id,page,duration_ms,country"
  for (i = 0; i < 10000; i++)
    printf "%d,user_%d,%s,%d,%s\n", i, 1 + int(rand() * 500), p[1 + int(rand() * 6)], 100 + int(rand() * 29901), c[1 + int(rand() * 8)]
}' > "$clicks"
apiary write analytics.events.clicks "$clicks"
rm -f "$clicks"
echo
apiary list
echo
apiary list analytics.events
echo
apiary describe analytics.events.clicks
echo
echo "Top pages by visit count:"
apiary sql "SELECT page, COUNT(*) AS visits, AVG(duration_ms) AS avg_duration
            FROM analytics.events.clicks GROUP BY page ORDER BY visits DESC"
echo
echo "Country breakdown:"
apiary sql "SELECT country, COUNT(*) AS events, AVG(duration_ms) AS avg_duration
            FROM analytics.events.clicks GROUP BY country ORDER BY events DESC"
echo
echo "How the cells were read (one country: the ledger prunes the other seven):"
apiary sql "EXPLAIN ANALYZE SELECT country, COUNT(*) FROM analytics.events.clicks
            WHERE country = 'us' GROUP BY country"

echo
echo "A swarm of three nodes on the same folder:"
storage="${APIARY_STORAGE:-./apiary-data}"
state="$(mktemp -d)"
pids=()
# Node 1 serves the HTTP console; a read token (shown once, kept hashed) lets us in.
http="${APIARY_QUICKSTART_HTTP:-127.0.0.1:8080}"
token="$(apiary token create --scope read --expires 1h --storage "$storage")"
token_id="${token#apiary_}"; token_id="${token_id%%_*}"
stop_nodes() {
  kill -TERM "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; rm -rf "$state"
  apiary token revoke "$token_id" --storage "$storage" >/dev/null 2>&1 || true
}
trap stop_nodes EXIT
for n in 1 2 3; do
  console=()
  [ "$n" = 1 ] && console=(--http "$http" --http-token-refresh 1s)
  APIARY_STATE_DIR="$state/node-$n" RUST_LOG=warn \
    "$bin" node --storage "$storage" --node-id "quickstart-node-$n" \
      --heartbeat-interval 1s --poll-interval 1s --task-poll-interval 200ms "${console[@]}" &
  pids+=("$!")
done
for _ in $(seq 1 60); do
  alive="$(apiary swarm --storage "$storage" --json | grep -c '"state": *"alive"' || true)"
  [ "$alive" -ge 3 ] && break
  sleep 0.5
done
apiary swarm --storage "$storage"
echo
echo "Country breakdown, distributed (SET apiary.distribute = 'always'):"
apiary sql "SET apiary.distribute = 'always';
            SELECT country, COUNT(*) AS events, AVG(duration_ms) AS avg_duration
            FROM analytics.events.clicks GROUP BY country ORDER BY events DESC"
echo
echo "How the query was split (a task per node, each over a share of the cells):"
apiary sql "SET apiary.distribute = 'always';
            EXPLAIN ANALYZE SELECT page, COUNT(*) AS visits, AVG(duration_ms) AS avg_duration
            FROM analytics.events.clicks GROUP BY page ORDER BY visits DESC"
echo
echo "Node 1's console: http://$http/ (probes, /metrics, /api/v1; docs/console.md)"
if command -v curl >/dev/null 2>&1; then
  echo "  curl -H 'Authorization: Bearer …' http://$http/api/v1/swarm"
  curl -fsS -H "Authorization: Bearer $token" "http://$http/api/v1/swarm" || echo "  (the console did not answer)"
  echo
fi
echo
echo "The colony of each node (temperature, regulation, bees, cells cached by the queries above):"
sleep 1.5   # one heartbeat, so the nodes publish what they cached
apiary colony --storage "$storage"
