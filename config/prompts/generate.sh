#!/bin/sh
# Regenerates the committed voice prompts: espeak-ng text-to-speech, then sox to
# 8000 Hz, mono, 16-bit signed little-endian PCM WAV (what src/media/prompts.rs loads).
#
#   sudo apt-get install -y espeak-ng sox   # Debian/Ubuntu
#   config/prompts/generate.sh              # from anywhere; writes next to this script
#
# Output is deterministic for a given espeak-ng/sox version (no dither, no metadata).
# Override the voice or speed with VOICE=en-us SPEED=150.
set -eu

cd "$(dirname "$0")"
VOICE="${VOICE:-en-us}"
SPEED="${SPEED:-165}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

say() {
    name="$1"
    text="$2"
    espeak-ng -v "$VOICE" -s "$SPEED" -w "$TMP/$name.wav" "$text"
    # -D: no dither; silence ...reverse...: trim leading and trailing silence;
    # gain -n -3: normalize to -3 dBFS; pad: 50 ms of silence before, 150 ms after.
    sox -D "$TMP/$name.wav" -r 8000 -c 1 -b 16 -e signed-integer "$name.wav" \
        silence 1 0.01 0.5% reverse silence 1 0.01 0.5% reverse \
        gain -n -3 pad 0.05 0.15
    echo "$name.wav"
}

say enter_id "Please enter your I D number, followed by the pound key."
say enter_pin "Please enter your PIN, followed by the pound key."
say pin_invalid "That I D or PIN is not valid."
say pin_locked "Too many incorrect entries. This phone is locked. Please try again later. Goodbye."
say account_locked "This account is locked after too many incorrect entries. Please ask staff for help. Goodbye."
say not_approved "That number is not on your approved contact list. Goodbye."
say blocked "Calls to that number are blocked. Goodbye."
say outside_hours "Calls are not allowed at this time. Goodbye."
say insufficient_funds "You do not have enough funds for this call. Goodbye."
say call_limit "You have reached your call limit. Goodbye."
say please_wait "Please wait while your call is connected."
say announcement_recorded "You have a call from an inmate at a correctional facility. This call is recorded and monitored. To accept, press 1. To refuse, press 2."
say announcement_privileged "You have a call from an inmate at a correctional facility. This call is not recorded. To accept, press 1. To refuse, press 2."
say accepted "Thank you. You may begin speaking now."
say declined "The call has been declined. Goodbye."
say funds_warning "You have one minute remaining."
say duration_warning "This call will end in one minute."
say funds_exhausted "Your funds are exhausted. Goodbye."
say goodbye "Goodbye."
say verify_number "This is a call to confirm your phone number for a family account at a correctional facility. If you asked for it, enter the code shown on your screen, followed by the pound key. If you did not ask for it, please hang up."
say number_confirmed "Thank you. Your number is confirmed. Goodbye."
say code_not_right "That code is not right, or it has expired. Goodbye."
