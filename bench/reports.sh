#!/usr/bin/env bash
# How long each facility report page takes on a large facility's year: writes the
# generated facility-year (bench/report_data.rs: 1,000,000 calls, 200,000 deposits, ...)
# into a fresh database, starts the real gateway on it and makes the requests the
# console's report page makes (web/reports.js): GET /api/v1/facilities and
# GET /api/v1/reports once, then for every report
# GET /api/v1/reports/<name>?facility=BIG&from=…&to=… (with days=14 for welfare and
# limit=20 for top-numbers, the form's defaults) and its CSV (the "Download CSV" button),
# over the generated year and over one month of it.
#
# Each report and range is timed cold, then warm: cold is its first request after the
# operating system's page cache is dropped (COLD=1, the default when run as root: it
# writes /proc/sys/vm/drop_caches; PostgreSQL's own shared buffers stay as they are),
# warm the median and the largest of RUNS requests after it. Before any of that, the
# first report that reads the rollups (src/reports/rollup.rs) on a freshly generated
# database summarises the year's days, once, while the gateway's background task does
# the same: that first request is timed and reported apart ("summarise once").
#
#   bench/reports.sh                                                     # SQLite
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/reports_bench bench/reports.sh
#
# Environment: CALLS, DEPOSITS (generator sizes), RUNS (default 5), DATABASE_URL (default
# a SQLite file in a temporary directory; a PostgreSQL database must exist and be empty),
# BIN and GEN (default target/release/{sallyport,examples/report_data}, built if missing),
# REUSE=1 (time the reports on DATABASE_URL as it is: a database generated before),
# KEEP=1 (keep the temporary directory: the SQLite file, the gateway's log),
# REPORTS (a subset, space separated), COLD=0 (do not drop the page cache).
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
REPORTS=${REPORTS:-"deposits spending revenue sessions-daily sessions-hourly call-length end-reasons top-numbers welfare balances"}
RANGES="year:2025-01-01:2025-12-31 month:2025-06-01:2025-06-30"
if [ -z "${COLD:-}" ]; then
  if [ -w /proc/sys/vm/drop_caches ]; then COLD=1; else COLD=0; fi
fi

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
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
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

# One request: its time in ms on stdout; the answer must be what the page reads.
get() {
  local path=$1 want=$2 t
  t=$(curl -s -o "$WORK/out" -w '%{time_total}' -H "Authorization: Bearer $TOKEN" "$API/api/v1$path")
  grep -q "$want" "$WORK/out" || { echo "reports: bad answer for $path: $(head -c 300 "$WORK/out")" >&2; exit 1; }
  python3 -c "print(round(float('$t') * 1000))"
}
drop_cache() {
  if [ "$COLD" = 1 ]; then sync; echo 3 > /proc/sys/vm/drop_caches; fi
}
load() { cut -d' ' -f1 /proc/loadavg; }

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in spending top-numbers; do
  echo "summarise once ($r, year): $(get "/reports/$r?facility=BIG&from=2025-01-01&to=2025-12-31" '"table"') ms, load $(load)"
done
echo "page set-up: facilities $(get /facilities BIG) ms, report list $(get /reports spending) ms"
echo "cold: $([ "$COLD" = 1 ] && echo 'first request after the page cache is dropped' || echo 'first request (page cache kept)')"
printf '%-16s %-6s %8s %8s %8s %8s %6s\n' report range cold_ms warm_ms max_ms csv_ms load
for range in $RANGES; do
  IFS=: read -r label from to <<<"$range"
  for r in $REPORTS; do
    q="facility=BIG&from=$from&to=$to"
    case $r in
      welfare) q="$q&days=14" ;;
      top-numbers) q="$q&limit=20" ;;
    esac
    drop_cache
    cold=$(get "/reports/$r?$q" '"table"')
    warm=()
    for _ in $(seq 1 "$RUNS"); do warm+=("$(get "/reports/$r?$q" '"table"')"); done
    csv=$(get "/reports/$r.csv?$q" ',')
    printf '%s\n' "${warm[@]}" | python3 -c '
import sys
name, label, cold, csv, load = sys.argv[1:6]
w = sorted(int(x) for x in sys.stdin)
print(f"{name:<16} {label:<6} {cold:>8} {w[len(w)//2]:>8} {w[-1]:>8} {csv:>8} {load:>6}")
' "$r" "$label" "$cold" "$csv" "$(load)"
  done
done
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
