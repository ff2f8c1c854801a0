#!/usr/bin/env bash
# Call set-ups per second against the real release binary, with sipp placing full calls:
# handset INVITE, calling ID and PIN by SIP INFO, ID + PIN check, destination checks and rating, trunk INVITE,
# called party answers and presses 1, bridge, per-increment debits, the inmate hangs up.
#
# Every call needs its own inmate (one live call per inmate; its calling ID drawn at
# booking, its PIN need not be unique), approved contact,
# funds and handset: the script books them through the HTTP API first.
#
#   bench/call_setups.sh                       # 200 calls at 10 calls/s, 4 s held
#   RATE=25 CALLS=1000 HOLD_MS=8000 bench/call_setups.sh
#   DECK_PREFIXES=100000 RATE=200 CALLS=2000 bench/call_setups.sh   # a large rate deck
#
# Environment: RATE (calls/s offered), CALLS (total), HOLD_MS (the inmate hangs up this
# long after the PIN), KEY_VIA (how the called party presses 1: rtp, RFC 4733 events played
# from a pcap, the default; or info, SIP INFO), DECK_PREFIXES (rate from a deck this large; default the demo's), BIN (default target/release/sallyport, built if missing), PAR
# (parallel API requests while booking), KEEP=1 (keep the work directory), SIPP_PCAPS
# (default /usr/share/sip-tester), DATABASE_URL (an empty PostgreSQL database instead of a
# fresh SQLite file), SAVE=dir (book, keep the booked state in dir, and stop), RESTORE=dir
# (start from a state SAVEd with the same CALLS and DECK_PREFIXES: no booking; with
# DATABASE_URL, a database created from the saved one as template), COUNT=1 (log every SQL
# statement and count them per call; costs CPU: not for timing runs). Needs sipp, curl,
# jq, ss, python3 (psql with DATABASE_URL). See bench/README.md.
set -euo pipefail

RATE=${RATE:-10}
CALLS=${CALLS:-200}
HOLD_MS=${HOLD_MS:-4000}
PAR=${PAR:-4}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/sallyport}
PCAPS=${SIPP_PCAPS:-/usr/share/sip-tester}
TOKEN=bench-admin-token
NUMBER=+15551230001

for tool in sipp curl jq ss python3; do
  command -v "$tool" >/dev/null || { echo "call_setups: $tool is required" >&2; exit 2; }
done
[ -f "$PCAPS/dtmf_2833_1.pcap" ] || { echo "call_setups: no DTMF pcaps in $PCAPS" >&2; exit 2; }
if [ ! -x "$BIN" ]; then
  echo "building $BIN ..."
  (cd "$ROOT" && cargo build --release -j2 --bin sallyport)
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/call_setups.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# ---- ports: a block below the ephemeral range with nothing bound in it ---------------
used=$(ss -Hanu | awk '{print $4}' | sed 's/.*://' | sort -un)
free_block() { # size -> base: first fit from a random start, 100-port steps
  local size=$1 start base i
  start=$(( RANDOM % 227 ))
  for i in $(seq 0 226); do
    base=$(( 10000 + ((start + i) % 227) * 100 ))
    (( base + size <= 32700 )) || continue
    if ! awk -v lo="$base" -v hi=$((base + size)) '$1 >= lo && $1 < hi {found=1} END {exit !found}' <<<"$used"; then
      echo "$base"; return
    fi
  done
  echo "call_setups: no free block of $size UDP ports in 10000-32699" >&2; exit 2
}
# Two RTP/RTCP pairs per live call; a call lives ~2 s of set-up + HOLD_MS + ~1 s, longer
# when the box saturates: twice that.
RTP_SPAN=${RTP_SPAN:-$(( RATE * (HOLD_MS / 1000 + 4) * 4 * 2 + 400 ))}
(( RTP_SPAN > 16000 )) && RTP_SPAN=16000
BASE=$(free_block $((RTP_SPAN + 16)))
TRUNK_SIP=$BASE; TRUNK_MEDIA=$((BASE + 2)); HS_SIP=$((BASE + 8)); HS_MEDIA=$((BASE + 10))
RTP_MIN=$((BASE + 16)); RTP_MAX=$((BASE + 16 + RTP_SPAN - 1))

# ---- the database ----------------------------------------------------------------------
DB_URL=${DATABASE_URL:-sqlite://$WORK/db.sqlite}
LOG_FILTER=${SALLYPORT_LOG:-warn}
[ "${COUNT:-0}" = 1 ] && LOG_FILTER="$LOG_FILTER,sqlx::query=debug"
if [ -n "${RESTORE:-}" ]; then
  [ -f "$RESTORE/calls.csv" ] || { echo "call_setups: nothing saved in $RESTORE" >&2; exit 2; }
  if [ -n "${DATABASE_URL:-}" ]; then
    # The saved database is the template of this run's (empty) one: recreate it from it.
    name=${DATABASE_URL##*/}; admin=${DATABASE_URL%/*}/postgres
    psql -q "$admin" -c "DROP DATABASE IF EXISTS \"$name\"" -c "CREATE DATABASE \"$name\" TEMPLATE \"$(cat "$RESTORE/template")\""
  else
    cp "$RESTORE/db.sqlite" "$WORK/db.sqlite"
  fi
fi
# xact_commit of the database (PostgreSQL), after the statistics are flushed.
commits() { sleep 1.5; psql -At "$DB_URL" -c "SELECT pg_stat_clear_snapshot(); SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()" | tail -1; }

# ---- the gateway ---------------------------------------------------------------------
# The parties send no audio while bridged (PIN by INFO, one key from the trunk): the media
# timeout is off, or holds over a minute would end as media_timeout.
(
  cd "$ROOT"
  SALLYPORT_RTP_MEDIA_TIMEOUT_SECS=0 \
  SALLYPORT_DATABASE_URL="$DB_URL" SALLYPORT_NODE_DATA_DIR="$WORK" \
  SALLYPORT_HTTP_LISTEN=127.0.0.1:0 SALLYPORT_HTTP_ADMIN_TOKEN=$TOKEN \
  SALLYPORT_SIP_UDP_LISTEN=127.0.0.1:0 SALLYPORT_SIP_TCP_LISTEN=127.0.0.1:0 \
  SALLYPORT_SIP_TRUNK=127.0.0.1:$TRUNK_SIP SALLYPORT_SIP_MAX_REQUESTS_PER_SECOND=5000 \
  SALLYPORT_SIP_PER_SOURCE_REQUESTS_PER_SECOND=0 \
  SALLYPORT_RTP_PORT_MIN=$RTP_MIN SALLYPORT_RTP_PORT_MAX=$RTP_MAX SALLYPORT_RTP_ADVERTISED_IP=127.0.0.1 \
  SALLYPORT_DATABASE_MAX_CONNECTIONS=${DB_CONNECTIONS:-8} SALLYPORT_LOG=$LOG_FILTER NO_COLOR=1 \
  exec "$BIN" serve >"$WORK/gateway.stdout" 2>"$WORK/gateway.log"
) &
GW_PID=$!; PIDS+=($GW_PID)
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$GW_PID/stat"; }
# Minor page faults of the gateway (each a page the kernel zeroed or mapped for it).
faults() { awk '{ print $10 }' "/proc/$GW_PID/stat"; }
for _ in $(seq 300); do
  # The HTTP line comes last (after SIP's): wait for it.
  grep -q '^sallyport: HTTP API listening on' "$WORK/gateway.stdout" 2>/dev/null && break
  sleep 0.1
done
HTTP=$(sed -n 's|^sallyport: HTTP API listening on http://||p' "$WORK/gateway.stdout")
SIP=$(sed -n 's|^sallyport: SIP listening on udp://\([^ ]*\).*|\1|p' "$WORK/gateway.stdout")
[ -n "$HTTP" ] && [ -n "$SIP" ] || { echo "call_setups: the gateway did not start" >&2; cat "$WORK/gateway.log" >&2; exit 1; }
API=http://$HTTP/api/v1

api() { # METHOD PATH [JSON] [IDEMPOTENCY-KEY]
  local args=(-sS -f -X "$1" -H "Authorization: Bearer $TOKEN" "$API$2")
  [ -n "${3:-}" ] && args+=(-H 'Content-Type: application/json' -d "$3")
  [ -n "${4:-}" ] && args+=(-H "Idempotency-Key: $4")
  curl "${args[@]}"
}
export -f api; export API TOKEN NUMBER

# ---- the books: 3-second increments at $0.05/min, one inmate per call -----------------
if [ -n "${RESTORE:-}" ]; then
  cp "$RESTORE/calls.csv" "$WORK/calls.csv"
  [ "$(wc -l <"$WORK/calls.csv")" -ge $((CALLS + 1)) ] || { echo "call_setups: $RESTORE has fewer than $CALLS inmates" >&2; exit 2; }
  echo "restored            $(( $(wc -l <"$WORK/calls.csv") - 1 )) booked inmates from $RESTORE"
else
curl -sS -f -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: text/csv' \
  --data-binary $'class,service,per_minute,increment_secs\nlocal,audio,0.05,3\ndomestic,audio,0.05,3\ninternational,audio,0.05,3\n' \
  "$API/rate-plans?id=bench-3s&max_call_secs=3600" >/dev/null
api PATCH /facilities/DEMO '{"rate_plan_id":"bench-3s"}' >/dev/null
# DECK_PREFIXES=N: rate from a deck of N North American prefixes (plus the bench number's)
# instead of the demo's three.
if [ "${DECK_PREFIXES:-0}" -gt 0 ]; then
  python3 - "$DECK_PREFIXES" >"$WORK/deck.csv" <<'PY'
import sys
n = int(sys.argv[1])
print("prefix,class,description")
print("1555,domestic,the bench number")
for i in range(n):
    print(f"1{200 + i // 800}{200 + i % 800},domestic,NPA {200 + i // 800}")
PY
  curl -sS -f -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: text/csv' \
    --data-binary @"$WORK/deck.csv" "$API/rate-decks?id=bench-big" >/dev/null
  api PATCH /facilities/DEMO '{"rate_deck_id":"bench-big"}' >/dev/null
  echo "rate deck           $((DECK_PREFIXES + 1)) prefixes"
fi

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
echo "booking $CALLS inmates (PIN, approved contact, \$5.00, handset) ..."
t0=$(date +%s.%N)
{ echo SEQUENTIAL; seq 1 "$CALLS" | xargs -P "$PAR" -I{} bash -c 'book_one {}'; } >"$WORK/calls.csv"
[ "$(wc -l <"$WORK/calls.csv")" -eq $((CALLS + 1)) ] || { echo "call_setups: booking failed" >&2; exit 1; }
awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "booked in %.1f s\n", b - a }'
fi
if [ -n "${SAVE:-}" ]; then
  mkdir -p "$SAVE"; cp "$WORK/calls.csv" "$SAVE/calls.csv"
  kill "$GW_PID"; wait "$GW_PID" 2>/dev/null || true
  if [ -n "${DATABASE_URL:-}" ]; then
    echo "${DATABASE_URL##*/}" >"$SAVE/template"
  else
    python3 -c 'import sqlite3,sys; s=sqlite3.connect(sys.argv[1]); d=sqlite3.connect(sys.argv[2]); s.backup(d); d.close()' \
      "$WORK/db.sqlite" "$SAVE/db.sqlite"
  fi
  echo "saved the booked state in $SAVE"; exit 0
fi

# ---- the calls -----------------------------------------------------------------------
# Both sipps ask for 4 MiB socket queues (-buff_size): with the default, the handset's SIP
# socket dropped some of the 200s to its bursts of INFO (190 in a 4,000-call run at 500/s),
# and each one lost cost a 500 ms retransmission the gateway was then timed by.
mkdir -p "$WORK/trunk" "$WORK/handset"
cp "$PCAPS/dtmf_2833_1.pcap" "$WORK/trunk/key1.pcap"
cp "$PCAPS/dtmf_2833_2.pcap" "$WORK/trunk/key2.pcap"
cp "$PCAPS/dtmf_2833_1.pcap" "$WORK/handset/pin.pcap" # loaded by the scenario, unused with INFO
(
  cd "$WORK/trunk"
  exec sipp -buff_size 4194304 -sf "$ROOT/tests/sipp/trunk.xml" -i 127.0.0.1 -p "$TRUNK_SIP" -mi 127.0.0.1 -mp "$TRUNK_MEDIA" \
    -aa -nostdin -set mode answer -set ring_ms 200 -set key 1 -set key_via "${KEY_VIA:-rtp}" -set key_ms 500 -set then wait -set hold_ms 0 \
    -trace_err -error_file errors.log >screen.log 2>&1
) &
TRUNK_PID=$!; PIDS+=($TRUNK_PID)
sleep 0.5

# Live calls, sampled once a second from the gateway's own gauge (`sallyport_calls_live` in
# /metrics, read from memory). GET /calls/active?limit=500 read 500 rows with their people
# and balances, and curl and jq over its JSON took 30 ms of CPU a sample besides: work on
# the same two cores as the calls measured, and capped at 500.
(
  while :; do
    n=$(curl -sS "http://$HTTP/metrics" 2>/dev/null | awk '$1 == "sallyport_calls_live" { print $2 }')
    echo "${n:-0}"; sleep 1
  done
) >"$WORK/active.samples" &
PIDS+=($!)

echo "placing $CALLS calls at $RATE/s, each held ${HOLD_MS} ms after the PIN ..."
[ -n "${DATABASE_URL:-}" ] && xact0=$(commits)
stmts0=$(grep -c 'sqlx::query' "$WORK/gateway.log" || true)
start=$(date +%s.%N)
cpu0=$(cpu_secs); faults0=$(faults)
set +e
(
  cd "$WORK/handset"
  python3 "$ROOT/bench/cpu_of.py" cpu.secs sipp -buff_size 4194304 -sf "$ROOT/tests/sipp/handset.xml" -i 127.0.0.1 -p "$HS_SIP" -mi 127.0.0.1 -mp "$HS_MEDIA" \
    -s "$NUMBER" "$SIP" -inf "$WORK/calls.csv" -r "$RATE" -m "$CALLS" -aa -nostdin \
    -timeout $(( CALLS / RATE + HOLD_MS / 1000 + 120 ))s \
    -set pin_via info -set attempts 1 -set pin_ms 0 -set then bye -set hold_ms "$HOLD_MS" \
    -trace_err -error_file errors.log -trace_stat -stf stats.csv -fd 1 -trace_rtt -rtt_freq 1 >screen.log 2>&1
)
SIPP_RC=$?
set -e
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
cpu=$(awk -v a="$cpu0" -v b="$(cpu_secs)" 'BEGIN { printf "%.1f", b - a }'); faults1=$(faults)
sleep 2
trunk_cpu=$(awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$TRUNK_PID/stat" 2>/dev/null || echo 0)
kill "$TRUNK_PID" 2>/dev/null || true
stmts1=$(grep -c 'sqlx::query' "$WORK/gateway.log" || true)
[ -n "${DATABASE_URL:-}" ] && xact1=$(commits)

# ---- what happened -------------------------------------------------------------------
for off in $(seq 0 500 $((CALLS + 500))); do
  curl -sS -f -H "Authorization: Bearer $TOKEN" "$API/calls?facility_id=DEMO&limit=500&offset=$off" | jq '.items'
done | jq -s 'add' >"$WORK/cdrs.json"
ledger=$(api GET /ledger/check | jq -c '.violations')

jq -r --arg rate "$RATE" --arg elapsed "$elapsed" '
  def t: if . == null then null else (sub("\\.[0-9]+Z$"; "Z") | fromdate) + ((capture("\\.(?<f>[0-9]+)Z$").f // "0") | ("0." + .) | tonumber) end;
  def peak(f; g): [ .[] | select(f != null) | [(f|t), 1], [(g|t), -1] ] | sort
                  | reduce .[] as $e ({n: 0, max: 0}; .n += $e[1] | .max = ([.max, .n] | max)) | .max;
  (map(select(.accepted_at != null))) as $ok
  | ($ok | map(.accepted_at | t)) as $acc
  | (map(.invite_at | t) | min) as $first
  | "offered rate        \($rate) calls/s (sipp ran \($elapsed | tonumber | . * 10 | round / 10) s)",
    "CDRs written        \(length)",
    "accepted (bridged)  \($ok | length)",
    "set-ups per second  \(if ($ok|length) > 1 then ((($ok|length) - 1) / (($acc|max) - ($acc|min)) * 100 | round / 100) else 0 end)  (acceptances per second, first to last)",
    "                    \(if ($ok|length) > 1 then (($ok|length) / (($acc|max) - $first) * 100 | round / 100) else 0 end)  (accepted calls / first INVITE to last acceptance)",
    "end reasons         \(group_by(.end_reason) | map("\(.[0].end_reason)=\(length)") | join(" "))",
    "increments debited  \(map(.billed_increments) | add)  amount \(map(.amount | tonumber) | add | . * 10000 | round / 10000)",
    "peak calls bridged  \(peak(.accepted_at; .end_at))  (from CDR times)",
    "peak sessions open  \(peak(.invite_at; .end_at))",
    "set-up time         median \($ok | map((.accepted_at|t) - (.invite_at|t)) | sort | .[length/2|floor] * 100 | round / 100) s  (INVITE to acceptance, PIN and announcement included)"
' "$WORK/cdrs.json"
echo "peak live (sampled) $(sort -n "$WORK/active.samples" | tail -1)  (sallyport_calls_live in /metrics, once a second)"
echo "sipp                $(grep -E 'Successful call' "$WORK/handset/screen.log" | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print "successful " $3}')," \
     "$(grep -E 'Failed call' "$WORK/handset/screen.log" | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print "failed " $3}') (exit $SIPP_RC)"
handset_cpu=$(cat "$WORK/handset/cpu.secs" 2>/dev/null || echo 0)
echo "sipp CPU            $(awk -v a="${handset_cpu:-0}" -v b="$trunk_cpu" -v n="$CALLS" 'BEGIN { printf "%.1f s (handset %.1f, trunk %.1f): %.2f ms per call", a + b, a, b, (a + b) * 1000 / n }')"
echo "gateway CPU         ${cpu} s user+system while sipp ran ($(nproc) cores): $(awk -v c="$cpu" -v n="$CALLS" 'BEGIN { printf "%.2f", c * 1000 / n }') ms per call"
echo "gateway page faults $((faults1 - faults0)) minor faults while sipp ran: $(awk -v a="$faults0" -v b="$faults1" -v n="$CALLS" 'BEGIN { printf "%.1f", (b - a) / n }') per call"
# INVITE -> 200 (sipp's response time, one value per call).
cat "$WORK"/handset/*_rtt.csv 2>/dev/null | awk -F';' 'NR > 1 && $2 != "" { print $2 }' | sort -n >"$WORK/rtt.txt" || true
echo "INVITE -> 200       $(awk '{ v[NR] = $1 } END { if (NR) printf "p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d calls)", v[int(NR * 0.5) + 1], v[int(NR * 0.99) + (NR * 0.99 > int(NR * 0.99))], v[NR], NR; else print "no samples" }' "$WORK/rtt.txt")"
if [ "${COUNT:-0}" = 1 ]; then
  sed -n 's/.*sqlx::query: summary="\([^"]\{0,40\}\).*/\1/p' "$WORK/gateway.log" \
    | awk -v a="$stmts0" -v b="$stmts1" 'NR > a && NR <= b' | sort | uniq -c | sort -rn >"$WORK/statements.txt"
  echo "SQL statements      $((stmts1 - stmts0)) while sipp ran: $(awk -v a="$stmts0" -v b="$stmts1" -v n="$CALLS" 'BEGIN { printf "%.1f", (b - a) / n }') per call (see statements.txt with KEEP=1)"
fi
[ -n "${DATABASE_URL:-}" ] && echo "commits (PostgreSQL) $((xact1 - xact0)) transactions committed while sipp ran: $(awk -v a="$xact0" -v b="$xact1" -v n="$CALLS" 'BEGIN { printf "%.1f", (b - a) / n }') per call"
echo "ledger check        violations $ledger"
metric() { curl -sS "http://$HTTP/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
echo "recordings          $(jq '[.[] | select(.recorded)] | length' "$WORK/cdrs.json") calls recorded; open now $(metric sallyport_recordings_open)," \
     "tap drops $(metric sallyport_rtp_tap_dropped_total), late packets $(metric sallyport_recorder_late_packets_total)," \
     "write errors $(metric sallyport_recorder_write_errors_total), $(du -sh "$WORK/recordings" 2>/dev/null | cut -f1) on disk"
gc=$(metric sallyport_db_group_commits_total); gw=$(metric sallyport_db_group_writes_total)
[ "${gc:-0}" != 0 ] && echo "group commits       ${gc} commits carried ${gw} writes: $(awk -v c="$gc" -v w="$gw" -v n="$CALLS" 'BEGIN { printf "%.2f writes per commit, %.1f commits per call (whole run)", w / c, c / n }')"
echo "SIP retransmissions $(metric sallyport_sip_retransmitted_unanswered_total) before the gateway's answer, $(metric sallyport_sip_retransmitted_answered_total) after it (whole run)"
echo "verify-recordings   $(cd "$ROOT" && SALLYPORT_DATABASE_URL="$DB_URL" SALLYPORT_NODE_DATA_DIR="$WORK" \
     SALLYPORT_LOG=error "$BIN" verify-recordings 2>&1 | tail -2 | tr '\n' ' ')"
echo "gateway warnings    $(grep -c -E 'WARN|ERROR' "$WORK/gateway.log" || true), of which 'no media ports' $(grep -c 'no media ports' "$WORK/gateway.log" || true) (RTP range $RTP_MIN-$RTP_MAX: $((RTP_SPAN / 4)) calls; see gateway.log with KEEP=1)"
