#!/usr/bin/env bash
# `make run`: with DISCORD_TOKEN configured (environment or .env), run a GPU/CPU worker and
# the bot together on one machine; without it, run the offline demo on the sample image.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

has_token() {
  [ -n "${DISCORD_TOKEN:-}" ] && return 0
  [ -f .env ] && grep -Eq '^[[:space:]]*DISCORD_TOKEN=.+' .env
}

if ! has_token; then
  echo "No DISCORD_TOKEN configured: running the offline demo (see README to go live)." >&2
  mkdir -p out
  # One kind per query: the tiny demo model finds each shape asked for alone, but puts
  # labels on the wrong shapes when asked for several at once (docs/performance.md).
  "$PY" -m inference detect samples/shapes.png --objects "circle" \
    --model models/palicord-tiny --out out/annotated.png
  echo "Annotated image written to out/annotated.png" >&2
  exit 0
fi

"$PY" -m inference.worker &
worker=$!
# SIGTERM lets the worker finish its batch and hand unstarted jobs back.
trap 'kill -TERM "$worker" 2>/dev/null; wait "$worker" 2>/dev/null || true' EXIT INT TERM
"$PY" -m bot
