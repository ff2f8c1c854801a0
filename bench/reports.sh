#!/usr/bin/env bash
# How long each facility report takes on a large facility's year: writes the generated
# facility-year (bench/report_data.rs: 1,000,000 calls, 200,000 deposits, ...) into a
# fresh database, starts the real gateway on it and times every report endpoint
# (GET /api/v1/reports/<name>?facility=BIG&from=2025-01-01&to=2025-12-31), JSON and CSV,
# RUNS times each (the first run is reported apart: it reads the data from disk, and on a
# database no gateway has summarised yet the first report that reads the rollups
# (src/reports/rollup.rs) summarises the year's days, while the gateway's own background
# task does the same).
#
#   bench/reports.sh                                                     # SQLite
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/reports_bench bench/reports.sh
#
# Environment: CALLS, DEPOSITS (generator sizes), RUNS (default 5), DATABASE_URL (default
# a SQLite file in a temporary directory; a PostgreSQL database must exist and be empty),
# BIN and GEN (default target/release/{sallyport,examples/report_data}, built if missing),
# REUSE=1 (time the reports on DATABASE_URL as it is: a database generated before).
# Needs curl and python3. See bench/README.md ("Reports").
set -euo pipefail

CALLS=${CALLS:-1000000}
DEPOSITS=${DEPOSITS:-200000}
RUNS=${RUNS:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${BIN:-$TARGET/release/sallyport}
GEN=${GEN:-$TARGET/release/examples/report_data}
TOKEN=bench-admin-token
REPORTS="deposits spending revenue sessions-daily sessions-hourly call-length end-reasons top-numbers welfare balances"

for tool in curl python3; do
  command -v "$tool" >/dev/null || { echo "reports: $tool is required" >&2; exit 2; }
done
if [ ! -x "$BIN" ] || [ ! -x "$GEN" ]; then
  echo "building $BIN and $GEN ..."
  (cd "$ROOT" && cargo build --release -j2 --bin sallyport --example report_data)
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/reports_bench.XXXXXX")
GW_PID=
cleanup() {
  [ -n "$GW_PID" ] && kill "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
URL=${DATABASE_URL:-sqlite://$WORK/db.sqlite}

if [ "${REUSE:-0}" != 1 ]; then
  echo "generating $CALLS calls and $DEPOSITS deposits into ${URL%%\?*} ..."
  "$GEN" --database-url "$URL" --calls "$CALLS" --deposits "$DEPOSITS"
fi
if [[ "$URL" == sqlite://* ]]; then
  du -h "${URL#sqlite://}" | sed 's/^/database size      /'
fi

(
  cd "$ROOT"
  SALLYPORT_DATABASE_URL=$URL \
  SALLYPORT_NODE_DATA_DIR="$WORK" SALLYPORT_HTTP_LISTEN=127.0.0.1:0 \
  SALLYPORT_HTTP_ADMIN_TOKEN=$TOKEN SALLYPORT_DEMO_SEED_ON_FIRST_START=false \
  SALLYPORT_SIP_UDP_LISTEN=127.0.0.1:0 SALLYPORT_SIP_TCP_LISTEN=127.0.0.1:0 \
  SALLYPORT_LOG=warn NO_COLOR=1 exec "$BIN" serve >"$WORK/gateway.stdout" 2>"$WORK/gateway.log"
) &
GW_PID=$!
for _ in $(seq 1 300); do
  grep -q "HTTP API listening" "$WORK/gateway.stdout" 2>/dev/null && break
  sleep 0.1
done
API=$(sed -n 's#^sallyport: HTTP API listening on \(http://[^ ]*\).*#\1#p' "$WORK/gateway.stdout")
[ -n "$API" ] || { echo "reports: the gateway did not start" >&2; cat "$WORK/gateway.log" >&2; exit 1; }

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-16s %10s %12s %12s %10s\n' report first_ms median_ms max_ms csv_ms
for r in $REPORTS; do
  q="facility=BIG&from=2025-01-01&to=2025-12-31"
  times=()
  for i in $(seq 1 "$RUNS"); do
    t=$(curl -s -o "$WORK/out.json" -w '%{time_total}' -H "Authorization: Bearer $TOKEN" \
      "$API/api/v1/reports/$r?$q")
    grep -q '"table"' "$WORK/out.json" || { echo "reports: bad answer for $r: $(head -c 300 "$WORK/out.json")" >&2; exit 1; }
    times+=("$t")
  done
  c=$(curl -s -o "$WORK/out.csv" -w '%{time_total}' -H "Authorization: Bearer $TOKEN" \
    "$API/api/v1/reports/$r.csv?$q")
  printf '%s\n' "${times[@]}" | python3 -c '
import sys
name, csv = sys.argv[1], float(sys.argv[2]) * 1000
raw = [float(x) * 1000 for x in sys.stdin]
rest = sorted(raw[1:]) or raw
print(f"{name:<16} {raw[0]:10.0f} {rest[len(rest)//2]:12.0f} {rest[-1]:12.0f} {csv:10.0f}")
' "$r" "$c"
done
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
