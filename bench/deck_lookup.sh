#!/usr/bin/env bash
# What a large rate deck costs a lookup: uploads a deck of PREFIXES prefixes (default
# 100,000) through the API of the real binary, then times LOOKUPS requests of
# GET /rate-decks/{id}/lookup/{number} (the loading path a call set-up's rating uses).
#
#   bench/deck_lookup.sh                    # 100,000 prefixes, 50 lookups, SQLite
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench bench/deck_lookup.sh
#
# Environment: PREFIXES, LOOKUPS, BIN (default target/release/sallyport, built if missing),
# DATABASE_URL (default a SQLite file in a temporary directory; a PostgreSQL database must
# exist and be empty). Needs curl and python3. See bench/README.md.
set -euo pipefail

PREFIXES=${PREFIXES:-100000}
LOOKUPS=${LOOKUPS:-50}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/sallyport}
TOKEN=bench-admin-token

for tool in curl python3; do
  command -v "$tool" >/dev/null || { echo "deck_lookup: $tool is required" >&2; exit 2; }
done
if [ ! -x "$BIN" ]; then
  echo "building $BIN ..."
  (cd "$ROOT" && cargo build --release -j2 --bin sallyport)
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/deck_lookup.XXXXXX")
GW_PID=
cleanup() {
  [ -n "$GW_PID" ] && kill "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

# A deck of distinct 7-digit North American prefixes (+1 NPA NXX), one class each.
python3 - "$PREFIXES" >"$WORK/deck.csv" <<'PY'
import sys
n = int(sys.argv[1])
print("prefix,class,description")
for i in range(n):
    npa = 200 + i // 800
    nxx = 200 + i % 800
    print(f"1{npa}{nxx},domestic,NPA {npa} NXX {nxx}")
PY

(
  cd "$ROOT"
  SALLYPORT_DATABASE_URL=${DATABASE_URL:-sqlite://$WORK/db.sqlite} \
  SALLYPORT_NODE_DATA_DIR="$WORK" SALLYPORT_HTTP_LISTEN=127.0.0.1:0 \
  SALLYPORT_HTTP_ADMIN_TOKEN=$TOKEN SALLYPORT_DEMO_SEED_ON_FIRST_START=false \
  SALLYPORT_SIP_UDP_LISTEN=127.0.0.1:0 SALLYPORT_SIP_TCP_LISTEN=127.0.0.1:0 \
  SALLYPORT_LOG=warn NO_COLOR=1 exec "$BIN" serve >"$WORK/gateway.stdout" 2>"$WORK/gateway.log"
) &
GW_PID=$!
for _ in $(seq 1 100); do
  grep -q "HTTP API listening" "$WORK/gateway.stdout" 2>/dev/null && break
  sleep 0.1
done
API=$(sed -n 's#^sallyport: HTTP API listening on \(http://[^ ]*\).*#\1#p' "$WORK/gateway.stdout")
[ -n "$API" ] || { echo "deck_lookup: the gateway did not start" >&2; cat "$WORK/gateway.log" >&2; exit 1; }

up=$(curl -s -o /dev/null -w '%{time_total}' -X POST -H "Authorization: Bearer $TOKEN" \
  --data-binary @"$WORK/deck.csv" "$API/api/v1/rate-decks?id=big")
echo "deck                $PREFIXES prefixes, uploaded in ${up} s"

times=()
for i in $(seq 1 "$LOOKUPS"); do
  npa=$((200 + (i * 37 % (PREFIXES / 800 > 0 ? PREFIXES / 800 : 1))))
  t=$(curl -s -o "$WORK/out.json" -w '%{time_total}' -H "Authorization: Bearer $TOKEN" \
    "$API/api/v1/rate-decks/big/lookup/+1${npa}2345678")
  grep -q '"prefix"' "$WORK/out.json" || { echo "deck_lookup: bad answer: $(cat "$WORK/out.json")" >&2; exit 1; }
  times+=("$t")
done
printf '%s\n' "${times[@]}" | python3 -c '
import sys
raw = [float(x) * 1000 for x in sys.stdin]
t = sorted(raw[1:]) or raw
print(f"first lookup        {raw[0]:.1f} ms (loads the deck)")
print(f"later lookups       {len(t)}: median {t[len(t)//2]:.1f} ms, p90 {t[int(len(t)*0.9)]:.1f} ms, max {t[-1]:.1f} ms")
'
