#!/bin/sh
# Side by side: sallyport's media engine and rtpengine (userspace, --table=-1) relaying
# the same load from the same generator (examples/rtp_load), alternating the two relays
# run by run. See bench/README.md, "Side by side with rtpengine".
#
#   bench/rtpengine_compare.sh                         # 100 500 1000 2000 sessions, 2 pairs
#   LOADS="100 1000" PAIRS=3 SECS=5 WORKERS=2 bench/rtpengine_compare.sh
#
# Needs rtpengine (Debian package rtpengine-daemon; started here as a normal process, not
# the system service) and a release build of the example:
#   cargo build --release --example rtp_load
# Prints each run's RESULT line; a summary table of all of them at the end.
set -eu
cd "$(dirname "$0")/.."
BIN=${RTP_LOAD:-${CARGO_TARGET_DIR:-target}/release/examples/rtp_load}
LOADS=${LOADS:-"100 500 1000 2000"}
PAIRS=${PAIRS:-2}
SECS=${SECS:-5}
WORKERS=${WORKERS:-2}
# Ports: sallyport's engine from 2000 (2000-10008 at 2,000 calls), below the test suites'
# blocks (10000-29999) and the kernel's ephemeral ports (32768-60999), where the
# generator's own peer sockets land; rtpengine in 30000-39999 (it skips ports in use).
PORTS=${PORTS:-"--port-min 2000 --rtpengine-port-min 30000 --rtpengine-port-max 39999"}
OUT=${OUT:-$(mktemp -t rtpengine_compare.XXXXXX)}
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release --example rtp_load" >&2; exit 1; }
command -v rtpengine >/dev/null || { echo "rtpengine not installed (rtpengine-daemon)" >&2; exit 1; }
# 2,000 calls: 4,000 peer sockets here, 8,000 in rtpengine (RTP + RTCP per side).
ulimit -n 65536 2>/dev/null || true

run() { # relay calls pair
    # shellcheck disable=SC2086 # PORTS is a list of arguments
    "$BIN" --relay "$1" --calls "$2" --secs "$SECS" --workers "$WORKERS" $PORTS | tee -a "$OUT.log" |
        grep '^RESULT' | sed "s/\$/ pair=$3/" | tee -a "$OUT"
    sleep 1
}

for calls in $LOADS; do
    pair=1
    while [ "$pair" -le "$PAIRS" ]; do
        # Alternate which relay goes first, so neither always gets the quieter moment.
        if [ $((pair % 2)) -eq 1 ]; then
            run sallyport "$calls" "$pair"; run rtpengine "$calls" "$pair"
        else
            run rtpengine "$calls" "$pair"; run sallyport "$calls" "$pair"
        fi
        pair=$((pair + 1))
    done
done

echo
echo "relay calls loss% p50us p99us p99.9us cores us/packet load(1/5/15) pair"
sed 's/[a-z_0-9]*=//g' "$OUT" | awk '{print $2, $3, $8, $9, $10, $11, $13, $14, $16, $17}'
echo
# The ratio the targets are read against: sallyport's CPU per delivered packet over
# rtpengine's in the same pair (a pair with a run that printed no RESULT is incomplete).
echo "calls pair sallyport/rtpengine (CPU per delivered packet)"
sed 's/[a-z_0-9]*=//g' "$OUT" | awk '
    { us[$3 " " $17 " " $2] = $14; pairs[$3 " " $17] = 1 }
    END {
        for (k in pairs) {
            s = us[k " sallyport"]; r = us[k " rtpengine"]
            if (s != "" && r != "" && r > 0) printf "%s %.2f\n", k, s / r
            else print k, "incomplete"
        }
    }' | sort -n -k1,1 -k2,2
echo "(all output: $OUT.log)"
