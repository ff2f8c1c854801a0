#!/usr/bin/env bash
# Visit load: N concurrent 1:1 visits of synthetic str0m participants (pre-encoded VP8 at
# about 500 kbit/s with a key frame every 3 s, Opus 32 kbit/s in 20 ms packets, both at
# their real rates) through sallyport's SFU and through Janus 1.1 (Debian's `janus`,
# EchoTest over its HTTP API), not recorded and recorded, in the same invocation with the
# same media. Prints one line per run and a table: loss, latency p50/p99, the SFU's CPU
# per forwarded stream and its ratio to Janus's. See bench/README.md ("Visits").
#
#   bench/visit_load.sh                                  # 25 50 100 250 visits, 20 s each
#   VISITS="100 250" SECS=30 bench/visit_load.sh
#   SFUS=sallyport MODES=record VISITS=250 bench/visit_load.sh
#   REPEAT=3 bench/visit_load.sh                         # each run three times, alternated
set -euo pipefail
cd "$(dirname "$0")/.."
VISITS=${VISITS:-"25 50 100 250"}
SECS=${SECS:-20}
MODES=${MODES:-"plain record"}
SFUS=${SFUS:-"sallyport janus"}
REPEAT=${REPEAT:-1}
JOIN_RATE=${JOIN_RATE:-20}
# sallyport's hub workers (threads, each with its own socket; rooms placed in turn).
HUBS=${HUBS:-1}
# PRIORITY=-10: the nice value of this script's autogroup (Linux gives every session an
# equal share of the CPU whatever its processes' nice values, so on a machine shared with
# other sessions' builds a run gets about 1/(sessions) of the cores without it). It raises
# the benchmark, both SFUs and the participants alike, above the other sessions.
# The group is the caller's session too: its nice value is put back on exit.
OLD_PRIORITY=$(awk '{print $3}' /proc/self/autogroup 2>/dev/null || echo 0)
if [ -n "${PRIORITY:-}" ]; then echo "$PRIORITY" >/proc/self/autogroup; fi
JANUS_PORT=${JANUS_PORT:-18088}
# libnice (Janus) gathers no loopback candidate: both SFUs and the participants use the
# machine's first IPv4 address, which the kernel routes through the loopback device.
IP=${IP:-$(hostname -I | tr ' ' '\n' | grep -m1 -E '^[0-9]+\.')}
TMP=$(mktemp -d /tmp/sallyport-visitload.XXXXXX)
JPID=
cleanup() {
  if [ -n "$JPID" ]; then kill "$JPID" 2>/dev/null || true; wait "$JPID" 2>/dev/null || true; fi
  rm -rf "$TMP"
  if [ -n "${PRIORITY:-}" ]; then echo "$OLD_PRIORITY" >/proc/self/autogroup || true; fi
}
trap cleanup EXIT

nice -n 19 cargo build --offline --release --example visit_load >&2
bin=${CARGO_TARGET_DIR:-target}/release/examples/visit_load

# The media, made once per invocation (the encoder is deterministic enough; what matters
# is the rate and the key-frame spacing): 20 s, looped by the participants.
ffmpeg -v error -y -f lavfi -i testsrc2=size=640x360:rate=30 -t 20 -c:v libvpx \
  -b:v 500k -minrate 500k -maxrate 500k -g 90 -keyint_min 90 -auto-alt-ref 0 \
  -lag-in-frames 0 -deadline realtime -cpu-used 8 -error-resilient 1 -f ivf "$TMP/visit.ivf"
ffmpeg -v error -y -f lavfi -i sine=frequency=440:sample_rate=48000 -t 20 -c:a libopus \
  -b:a 32k -frame_duration 20 -f ogg "$TMP/visit.ogg"

# Janus: only the HTTP transport (on 127.0.0.1) and the EchoTest plugin; ICE on \$IP only,
# no STUN, host candidates in the SDP (no full trickle); two static event
# loops (one per core) instead of a thread per handle.
J="$TMP/janus"
mkdir -p "$J"
lib=/usr/lib/x86_64-linux-gnu/janus
cat >"$J/janus.jcfg" <<EOF
general: {
	configs_folder = "$J"
	plugins_folder = "$lib/plugins"
	transports_folder = "$lib/transports"
	events_folder = "$lib/events"
	loggers_folder = "$lib/loggers"
	debug_level = 3
	session_timeout = 0
	event_loops = 2
}
certificates: {
}
media: {
	rtp_port_range = "30000-60000"
}
nat: {
	nice_debug = false
	full_trickle = false
	ice_enforce_list = "$IP"
	ignore_mdns = true
}
plugins: {
	disable = "libjanus_audiobridge.so,libjanus_duktape.so,libjanus_lua.so,libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,libjanus_streaming.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_videoroom.so,libjanus_voicemail.so"
}
transports: {
	disable = "libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_pfunix.so,libjanus_rabbitmq.so,libjanus_websockets.so"
}
loggers: {
	disable = "libjanus_jsonlog.so"
}
events: {
	broadcast = false
}
EOF
cat >"$J/janus.transport.http.jcfg" <<EOF
general: {
	json = "plain"
	base_path = "/janus"
	http = true
	port = $JANUS_PORT
	ip = "127.0.0.1"
	https = false
}
admin: {
	admin_http = false
}
EOF
printf 'general: {\n}\n' >"$J/janus.plugin.echotest.jcfg"

start_janus() {
  janus -C "$J/janus.jcfg" -F "$J" >>"$TMP/janus.log" 2>&1 &
  JPID=$!
  for _ in $(seq 50); do
    if curl -sf -X POST -d '{"janus":"info","transaction":"x"}' \
      "http://127.0.0.1:$JANUS_PORT/janus" >/dev/null 2>&1; then return; fi
    sleep 0.2
  done
  echo "Janus did not start; its log:" >&2
  tail -20 "$TMP/janus.log" >&2
  exit 1
}
stop_janus() {
  kill "$JPID" 2>/dev/null || true
  wait "$JPID" 2>/dev/null || true
  JPID=
}

results="$TMP/results"
: >"$results"
for n in $VISITS; do
  for rep in $(seq "$REPEAT"); do
    for mode in $MODES; do
      for sfu in $SFUS; do
        rec=()
        [ "$mode" = record ] && rec=(--record --dir "$TMP/rec")
        extra=(--hubs "$HUBS")
        if [ "$sfu" = janus ]; then
          start_janus
          extra=(--janus "127.0.0.1:$JANUS_PORT" --janus-pid "$JPID")
        fi
        echo "== $sfu, $n visits, $mode (run $rep), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
        out=$("$bin" --sfu "$sfu" --visits "$n" --secs "$SECS" --ivf "$TMP/visit.ivf" \
          --ogg "$TMP/visit.ogg" --ip "$IP" --join-rate "$JOIN_RATE" "${rec[@]}" "${extra[@]}" 2>&1) || true
        echo "$out" | grep -v '^RESULT' >&2
        if [ "$mode" = record ]; then
          echo "recordings: $(du -sh "$TMP/rec" 2>/dev/null | cut -f1) in $(find "$TMP/rec" -type f | wc -l) files" >&2
        fi
        echo "$out" | grep '^RESULT' >>"$results" || echo "RESULT sfu=$sfu visits=$n failed=1" >>"$results"
        [ "$sfu" = janus ] && stop_janus
        rm -rf "$TMP/rec"
      done
    done
  done
done

# The table: sallyport's CPU per stream as a ratio to Janus's in the same (N, mode, run).
awk '
function kv(line, key,   re, m) {
  re = " " key "=[^ ]*"
  if (match(line, re)) { m = substr(line, RSTART + length(key) + 2, RLENGTH - length(key) - 2); return m }
  return ""
}
{
  sfu = kv($0, "sfu"); n = kv($0, "visits"); r = (kv($0, "record") == "true") ? "recorded" : "plain"
  key = n SUBSEP r SUBSEP (++seen[sfu, n, r])
  line[sfu, key] = $0
  if (!(key in order)) { order[key] = ++k; keys[k] = key }
}
END {
  printf "| visits | recorded | SFU | not connected | lost / sent | p50 ms | p99 ms | SFU CPU %% of a core | ms CPU/s per stream | ratio to Janus | participants CPU %% | machine %% | load |\n"
  printf "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
  for (i = 1; i <= k; i++) {
    split(keys[i], p, SUBSEP)
    js = kv(line["janus", keys[i]], "per_stream_ms")
    for (s = 1; s <= 2; s++) {
      sfu = (s == 1) ? "sallyport" : "janus"
      l = line[sfu, keys[i]]
      if (l == "") continue
      if (kv(l, "failed") == "1") { printf "| %s | %s | %s | run failed |\n", p[1], p[2], sfu; continue }
      ratio = ""
      name = sfu
      if (kv(l, "hubs") + 0 > 1) name = sfu " (" kv(l, "hubs") " hubs)"
      if (sfu == "sallyport" && js + 0 > 0) ratio = sprintf("%.2f", kv(l, "per_stream_ms") / js)
      printf "| %s | %s | %s | %s | %s / %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", p[1], p[2], name,
        kv(l, "not_connected"), kv(l, "lost"), kv(l, "sent"), kv(l, "p50_ms"), kv(l, "p99_ms"),
        kv(l, "sfu_cpu_pct"), kv(l, "per_stream_ms"), ratio, kv(l, "gen_cpu_pct"), kv(l, "machine_pct"), kv(l, "load")
    }
  }
}' "$results"
