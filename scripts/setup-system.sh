#!/usr/bin/env bash
# System packages that `make run` (redis-server, when no Redis is running) and `make test`
# (redis-server and redis-cli for the cluster tests, chromium and chromium-driver for the
# browser tests) need. Installs the missing ones with apt-get where it can (root, or
# passwordless sudo); otherwise says exactly what to install. Never downloads a browser
# any other way.
set -euo pipefail
purpose="${1:-test}"

declare -A package_of=(
  [redis-server]=redis-server [redis-cli]=redis-tools
  [chromium]=chromium [chromedriver]=chromium-driver
)
case "$purpose" in
  run) needed=(redis-server) ;;
  test) needed=(redis-server redis-cli chromium chromedriver) ;;
  *) echo "usage: $0 run|test" >&2; exit 2 ;;
esac

missing=()
for binary in "${needed[@]}"; do
  command -v "$binary" >/dev/null 2>&1 || missing+=("${package_of[$binary]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$purpose" = run ] && [ -n "${REDIS_URL:-}" ]; then
  exit 0  # a Redis of the operator's own: nothing to install
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    as_root=(false)
  fi
fi
if command -v apt-get >/dev/null 2>&1 && [ "${as_root[*]-}" != false ]; then
  echo "Installing ${missing[*]} (apt-get)..." >&2
  "${as_root[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
  exit 0
fi

echo "Please install: ${missing[*]}" >&2
echo "  Debian/Ubuntu: sudo apt-get install ${missing[*]}" >&2
if [ "$purpose" = run ]; then
  echo "  (or start a Redis yourself, or set REDIS_URL)" >&2
  exit 0  # the sandbox still runs on a Redis already listening on 127.0.0.1:6379
fi
exit 1
