#!/usr/bin/env bash
# Recording under load: CALLS concurrent bridged calls (50 packets/s each way) through the
# media engine, first without recording, then with every call recorded (taps, recorder
# thread, WAV files on disk), so the difference is what recording costs. Prints, for the
# recorded run: drops, late packets, bytes per call-minute, the recorder thread's CPU, and
# the engine process's CPU against the unrecorded run.
#
#   CALLS=500 SECS=20 bench/recording_load.sh
#   DIR=/var/tmp/recload bench/recording_load.sh    # where the files go (removed after)
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS=${CALLS:-500}
SECS=${SECS:-20}
DIR=${DIR:-$(mktemp -d /tmp/sallyport-recload.XXXXXX)}
cargo build --release --example rtp_load >/dev/null
bin=./target/release/examples/rtp_load
echo "== ${CALLS} calls, not recorded"
"$bin" --calls "$CALLS" --secs "$SECS" | grep -E "lost|latency|engine CPU"
echo "== ${CALLS} calls, every call recorded into ${DIR}"
"$bin" --calls "$CALLS" --secs "$SECS" --record "$DIR" \
  | grep -E "lost|latency|engine CPU|recorded|recorder"
echo "disk: $(du -sh "$DIR" | cut -f1) in $(find "$DIR" -name '*.wav' | wc -l) files"
rm -rf "$DIR"
