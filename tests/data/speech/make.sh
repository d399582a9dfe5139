#!/usr/bin/env bash
# Regenerates the speech set: each line of sentences.txt (id, voice, text) spoken by espeak-ng,
# then made telephone audio with sox (8 kHz, mono, mu-law, as a carrier delivers it).
# Needs espeak-ng and sox (scripts/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")"
while IFS=$'\t' read -r id voice text; do
  espeak-ng -v "$voice" -s 140 -w "/tmp/ppc-speech-$id.wav" "$text"
  sox -q "/tmp/ppc-speech-$id.wav" -r 8000 -c 1 -e mu-law "$id.wav"
  rm -f "/tmp/ppc-speech-$id.wav"
done < sentences.txt
