#!/usr/bin/env bash
# `make run`. Without DISCORD_TOKEN (environment or .env): the sandbox, the whole product on
# this machine with a browser page that plays Discord (python -m sandbox finds or starts
# Redis, runs the real worker and bot, prints the page's address). With a token: a worker
# and the bot, connected to Discord.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

has_token() {
  [ -n "${DISCORD_TOKEN:-}" ] && return 0
  [ -f .env ] && grep -Eq '^[[:space:]]*DISCORD_TOKEN=.+' .env
}

if ! has_token; then
  exec "$PY" -m sandbox
fi

if [ -z "${REDIS_URL:-}" ] && ! grep -Eq '^[[:space:]]*REDIS_URL=.+' .env 2>/dev/null; then
  make -s redis  # the local Redis on 127.0.0.1:6379, started if it is not running
fi
"$PY" -m inference.worker &
worker=$!
# SIGTERM lets the worker finish its batch and hand unstarted jobs back.
trap 'kill -TERM "$worker" 2>/dev/null; wait "$worker" 2>/dev/null || true' EXIT INT TERM
"$PY" -m bot
