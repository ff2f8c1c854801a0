#!/usr/bin/env bash
# Call set-ups per second through Kamailio in front of NODES gateway nodes on one
# PostgreSQL database: the same calls as call_setups.sh (handset INVITE, calling ID and PIN
# by SIP INFO, ID + PIN and destination checks, rating, trunk INVITE, the called party
# answers and presses 1, bridge, per-increment debits, the inmate hangs up), sent by one
# sipp to the proxy's one address (config/kamailio.cfg, round robin over the nodes). Each
# node has its own trunk (a sipp answering on the node's sip.trunk).
#
#   NODES=1 RATE=100 CALLS=1000 bench/cluster_setups.sh
#   NODES=3 RATE=100 CALLS=1000 bench/cluster_setups.sh
#
# Environment: NODES (1..3, default 2), RATE (calls/s offered, default 50), CALLS (default
# 500), HOLD_MS (the inmate hangs up this long after the PIN, default 4000), PAR (parallel
# API requests while booking), BIN (default target/release/sallyport; not built here),
# PG (an administrator URL of the PostgreSQL server; default
# postgres://postgres@127.0.0.1:5432/postgres: a database bench_cluster_<pid> is created
# there and dropped at the end), KEEP=1 (keep the work directory), SIPP_PCAPS (default
# /usr/share/sip-tester). Needs sipp, kamailio, curl, jq, ss, psql.
#
# It prints, per node, the calls it carried and its peak of concurrent bridged calls, and
# for the database the transactions committed per call (pg_stat_database.xact_commit) and,
# when the pg_stat_statements extension can be created, the statements executed per call.
set -euo pipefail

NODES=${NODES:-2}
RATE=${RATE:-50}
CALLS=${CALLS:-500}
HOLD_MS=${HOLD_MS:-4000}
PAR=${PAR:-4}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/sallyport}
PCAPS=${SIPP_PCAPS:-/usr/share/sip-tester}
PG=${PG:-postgres://postgres@127.0.0.1:5432/postgres}
TOKEN=bench-admin-token
NUMBER=+15551230001

for tool in sipp kamailio curl jq ss psql; do
  command -v "$tool" >/dev/null || { echo "cluster_setups: $tool is required" >&2; exit 2; }
done
[ -x "$BIN" ] || { echo "cluster_setups: no gateway binary at $BIN (cargo build --release)" >&2; exit 2; }
(( NODES >= 1 && NODES <= 3 )) || { echo "cluster_setups: NODES is 1 to 3" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cluster_setups.XXXXXX")
DB=bench_cluster_$$
DB_URL=${PG%/*}/$DB
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${KAM_PID:-}" ] && kill -- "-$KAM_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  psql -q "$PG" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
psql -q "$PG" -c "CREATE DATABASE $DB"
STATEMENTS=0
psql -q "$DB_URL" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" 2>/dev/null \
  && psql -Atq "$DB_URL" -c "SELECT pg_stat_statements_reset()" >/dev/null 2>&1 && STATEMENTS=1

# ---- ports: one free block below the ephemeral range ----------------------------------
used=$(ss -Hanu | awk '{print $4}' | sed 's/.*://' | sort -un)
RTP_SPAN=$(( RATE * (HOLD_MS / 1000 + 4) * 4 * 2 + 400 ))
(( RTP_SPAN > 20000 / NODES )) && RTP_SPAN=$(( 20000 / NODES ))
SIZE=$(( 32 + NODES * RTP_SPAN ))
BASE=
for i in $(seq 0 226); do
  b=$(( 10000 + ((RANDOM % 227 + i) % 227) * 100 ))
  (( b + SIZE <= 32700 )) || continue
  awk -v lo="$b" -v hi=$((b + SIZE)) '$1 >= lo && $1 < hi {f=1} END {exit !f}' <<<"$used" || { BASE=$b; break; }
done
[ -n "$BASE" ] || { echo "cluster_setups: no free block of $SIZE UDP ports" >&2; exit 2; }
PROXY_PORT=$BASE; HS_SIP=$((BASE + 2)); HS_MEDIA=$((BASE + 4))
trunk_sip() { echo $((BASE + 8 + $1 * 8)); }
trunk_media() { echo $((BASE + 10 + $1 * 8)); }
rtp_min() { echo $((BASE + 32 + $1 * RTP_SPAN)); }

# ---- the nodes -------------------------------------------------------------------------
start_node() { # i
  local i=$1 dir=$WORK/node$1
  mkdir -p "$dir"
  (
    cd "$ROOT"
    SALLYPORT_RTP_MEDIA_TIMEOUT_SECS=0 \
    SALLYPORT_DATABASE_URL="$DB_URL" SALLYPORT_NODE_DATA_DIR="$dir" SALLYPORT_RECORDING_DIR="$WORK/recordings" \
    SALLYPORT_NODE_ID="node-$i" SALLYPORT_CLUSTER_SECRET=bench-cluster-secret-0123456789 \
    SALLYPORT_HTTP_LISTEN=127.0.0.1:0 SALLYPORT_HTTP_ADMIN_TOKEN=$TOKEN \
    SALLYPORT_SIP_UDP_LISTEN=127.0.0.1:0 SALLYPORT_SIP_TCP_LISTEN=127.0.0.1:0 \
    SALLYPORT_SIP_TRUNK=127.0.0.1:$(trunk_sip "$i") SALLYPORT_SIP_MAX_REQUESTS_PER_SECOND=5000 \
    SALLYPORT_SIP_PER_SOURCE_REQUESTS_PER_SECOND=0 SALLYPORT_SIP_TRUSTED_PROXIES=127.0.0.1/32 \
    SALLYPORT_RTP_PORT_MIN="$(rtp_min "$i")" SALLYPORT_RTP_PORT_MAX=$(( $(rtp_min "$i") + RTP_SPAN - 1 )) \
    SALLYPORT_RTP_ADVERTISED_IP=127.0.0.1 \
    SALLYPORT_DATABASE_MAX_CONNECTIONS=${DB_CONNECTIONS:-8} SALLYPORT_LOG=warn NO_COLOR=1 \
    exec "$BIN" serve >"$dir/stdout" 2>"$dir/log"
  ) &
  PIDS+=($!); echo $! >"$dir/pid"
  for _ in $(seq 300); do
    grep -q '^sallyport: HTTP API listening on' "$dir/stdout" 2>/dev/null && break
    sleep 0.1
  done
  grep -q '^sallyport: HTTP API listening on' "$dir/stdout" || { echo "cluster_setups: node $i did not start" >&2; cat "$dir/log" >&2; exit 1; }
}
# One after the other: the first migrates the empty database.
for i in $(seq 0 $((NODES - 1))); do start_node "$i"; done
http_of() { sed -n 's|^sallyport: HTTP API listening on http://||p' "$WORK/node$1/stdout"; }
sip_of() { sed -n 's|^sallyport: SIP listening on udp://\([^ ]*\).*|\1|p' "$WORK/node$1/stdout"; }
API=http://$(http_of 0)/api/v1
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$(cat "$WORK/node$1/pid")/stat"; }

# ---- Kamailio --------------------------------------------------------------------------
for i in $(seq 0 $((NODES - 1))); do echo "1 sip:$(sip_of "$i")"; done >"$WORK/dispatcher.list"
setsid kamailio -f "$ROOT/config/kamailio.cfg" -DD -E -m 256 -M 16 -Y "$WORK" \
  -A "LISTEN=udp:127.0.0.1:$PROXY_PORT" -A "DS_LIST=\"$WORK/dispatcher.list\"" -A DS_PING_SECS=1 \
  >/dev/null 2>"$WORK/kamailio.log" &
KAM_PID=$!
sleep 3

api() { # METHOD PATH [JSON] [IDEMPOTENCY-KEY]
  local args=(-sS -f -X "$1" -H "Authorization: Bearer $TOKEN" "$API$2")
  [ -n "${3:-}" ] && args+=(-H 'Content-Type: application/json' -d "$3")
  [ -n "${4:-}" ] && args+=(-H "Idempotency-Key: $4")
  curl "${args[@]}"
}
export -f api; export API TOKEN NUMBER

# ---- the books (as call_setups.sh): 3-second increments, one inmate per call -----------
curl -sS -f -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: text/csv' \
  --data-binary $'class,service,per_minute,increment_secs\nlocal,audio,0.05,3\ndomestic,audio,0.05,3\ninternational,audio,0.05,3\n' \
  "$API/rate-plans?id=bench-3s&max_call_secs=3600" >/dev/null
api PATCH /facilities/DEMO '{"rate_plan_id":"bench-3s"}' >/dev/null
book_one() { # i -> "handset;calling ID#PIN#"
  local i=$1 pin inmate contact account
  pin=$(printf '%04d' $(( (2000 + i) % 10000 )))
  inmate=$(api POST /facilities/DEMO/inmates "{\"booking_number\":\"BENCH-$i\",\"first_name\":\"Bench\",\"last_name\":\"$i\",\"pin\":\"$pin\"}")
  account=$(jq -r .account_id <<<"$inmate")
  contact=$(api POST "/inmates/$(jq -r .id <<<"$inmate")/contacts" "{\"number\":\"$NUMBER\",\"name\":\"Family $i\"}")
  api POST "/contacts/$(jq -r .id <<<"$contact")/approve" >/dev/null
  api POST "/accounts/$account/deposits" '{"amount":"5.00","method":"online","depositor":"bench"}' "bench-$i" >/dev/null
  api POST /facilities/DEMO/handsets "{\"name\":\"bench $i\",\"sip_username\":\"bench-hs-$i\"}" >/dev/null
  echo "bench-hs-$i;$(jq -r .calling_id <<<"$inmate")#$pin#"
}
export -f book_one
echo "booking $CALLS inmates ..."
{ echo SEQUENTIAL; seq 1 "$CALLS" | xargs -P "$PAR" -I{} bash -c 'book_one {}'; } >"$WORK/calls.csv"
[ "$(wc -l <"$WORK/calls.csv")" -eq $((CALLS + 1)) ] || { echo "cluster_setups: booking failed" >&2; exit 1; }

# ---- the calls -------------------------------------------------------------------------
for i in $(seq 0 $((NODES - 1))); do
  mkdir -p "$WORK/trunk$i"
  cp "$PCAPS/dtmf_2833_1.pcap" "$WORK/trunk$i/key1.pcap"
  cp "$PCAPS/dtmf_2833_2.pcap" "$WORK/trunk$i/key2.pcap"
  (
    cd "$WORK/trunk$i"
    exec sipp -sf "$ROOT/tests/sipp/trunk.xml" -i 127.0.0.1 -p "$(trunk_sip "$i")" -mi 127.0.0.1 -mp "$(trunk_media "$i")" \
      -aa -nostdin -set mode answer -set ring_ms 200 -set key 1 -set key_via rtp -set key_ms 500 -set then wait -set hold_ms 0 \
      -trace_err -error_file errors.log >screen.log 2>&1
  ) &
  PIDS+=($!)
done
mkdir -p "$WORK/handset"
cp "$PCAPS/dtmf_2833_1.pcap" "$WORK/handset/pin.pcap"
sleep 0.5

commits() { sleep 1.5; psql -At "$DB_URL" -c "SELECT pg_stat_clear_snapshot(); SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()" | tail -1; }
calls_stmts() { psql -At "$DB_URL" -c "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())" 2>/dev/null || echo 0; }
echo "placing $CALLS calls at $RATE/s through Kamailio to $NODES node(s), each held ${HOLD_MS} ms after the PIN ..."
xact0=$(commits)
[ "$STATEMENTS" = 1 ] && stmts0=$(calls_stmts)
declare -a cpu0
for i in $(seq 0 $((NODES - 1))); do cpu0[$i]=$(cpu_of "$i"); done
load0=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(date +%s.%N)
set +e
(
  cd "$WORK/handset"
  exec sipp -sf "$ROOT/tests/sipp/handset.xml" -i 127.0.0.1 -p "$HS_SIP" -mi 127.0.0.1 -mp "$HS_MEDIA" \
    -s "$NUMBER" "127.0.0.1:$PROXY_PORT" -inf "$WORK/calls.csv" -r "$RATE" -m "$CALLS" -aa -nostdin \
    -timeout $(( CALLS / RATE + HOLD_MS / 1000 + 120 ))s \
    -set pin_via info -set attempts 1 -set pin_ms 0 -set then bye -set hold_ms "$HOLD_MS" \
    -trace_err -error_file errors.log -trace_rtt -rtt_freq 1 >screen.log 2>&1
)
SIPP_RC=$?
set -e
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
load1=$(cut -d' ' -f1-3 /proc/loadavg)
sleep 2
xact1=$(commits)
[ "$STATEMENTS" = 1 ] && stmts1=$(calls_stmts)

# ---- what happened -----------------------------------------------------------------------
for off in $(seq 0 500 $((CALLS + 500))); do
  curl -sS -f -H "Authorization: Bearer $TOKEN" "$API/calls?facility_id=DEMO&limit=500&offset=$off" | jq '.items'
done | jq -s 'add' >"$WORK/cdrs.json"
ledger=$(api GET /ledger/check | jq -c '.violations')
jq -r --arg rate "$RATE" --arg elapsed "$elapsed" --arg nodes "$NODES" '
  def t: if . == null then null else (sub("\\.[0-9]+Z$"; "Z") | fromdate) + ((capture("\\.(?<f>[0-9]+)Z$").f // "0") | ("0." + .) | tonumber) end;
  def peak(f; g): [ .[] | select(f != null) | [(f|t), 1], [(g|t), -1] ] | sort
                  | reduce .[] as $e ({n: 0, max: 0}; .n += $e[1] | .max = ([.max, .n] | max)) | .max;
  (map(select(.accepted_at != null))) as $ok
  | ($ok | map(.accepted_at | t)) as $acc
  | "nodes               \($nodes) behind Kamailio",
    "offered rate        \($rate) calls/s (sipp ran \($elapsed | tonumber | . * 10 | round / 10) s)",
    "CDRs written        \(length)",
    "accepted (bridged)  \($ok | length)",
    "set-ups per second  \(if ($ok|length) > 1 then ((($ok|length) - 1) / (($acc|max) - ($acc|min)) * 100 | round / 100) else 0 end)  (acceptances per second, first to last)",
    "end reasons         \(group_by(.end_reason) | map("\(.[0].end_reason)=\(length)") | join(" "))",
    "peak calls bridged  \(peak(.accepted_at; .end_at))  (all nodes)",
    (group_by(.node_id)[] | "  \(.[0].node_id)          \(length) calls, peak bridged \(peak(.accepted_at; .end_at))"),
    "set-up time         median \($ok | map((.accepted_at|t) - (.invite_at|t)) | sort | .[length/2|floor] * 100 | round / 100) s  (INVITE to acceptance, PIN and announcement included)"
' "$WORK/cdrs.json"
echo "sipp                $(grep -E 'Successful call' "$WORK/handset/screen.log" | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print "successful " $3}')," \
     "$(grep -E 'Failed call' "$WORK/handset/screen.log" | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print "failed " $3}') (exit $SIPP_RC)"
for i in $(seq 0 $((NODES - 1))); do
  echo "node-$i CPU          $(awk -v a="${cpu0[$i]}" -v b="$(cpu_of "$i")" -v n="$CALLS" 'BEGIN { printf "%.1f s user+system while sipp ran", b - a }')"
done
echo "commits (PostgreSQL) $((xact1 - xact0)) transactions: $(awk -v a="$xact0" -v b="$xact1" -v n="$CALLS" 'BEGIN { printf "%.1f", (b - a) / n }') per call"
[ "$STATEMENTS" = 1 ] && echo "statements          $((stmts1 - stmts0)) executed (pg_stat_statements): $(awk -v a="$stmts0" -v b="$stmts1" -v n="$CALLS" 'BEGIN { printf "%.1f", (b - a) / n }') per call"
echo "INVITE -> 200       $(cat "$WORK"/handset/*_rtt.csv 2>/dev/null | awk -F';' 'NR > 1 && $2 != "" { print $2 }' | sort -n | awk '{ v[NR] = $1 } END { if (NR) printf "p50 %.1f ms, p99 %.1f ms (%d calls)", v[int(NR * 0.5) + 1], v[int(NR * 0.99) + 1], NR; else print "no samples" }')"
echo "load average        $load0 before, $load1 after ($(nproc) cores)"
echo "ledger check        violations $ledger"
