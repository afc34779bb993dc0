#!/usr/bin/env bash
# Headless Chromium and ChromeDriver for the browser tests, from Debian's
# packages (chromium, chromium-driver), installed when missing.
#
# Sourced by scripts/test.sh for browser_install. Sets and exports
# ACTEON_CHROMIUM and ACTEON_CHROMEDRIVER.

browser_install() {
  export ACTEON_CHROMIUM="${ACTEON_CHROMIUM:-/usr/bin/chromium}"
  export ACTEON_CHROMEDRIVER="${ACTEON_CHROMEDRIVER:-/usr/bin/chromedriver}"
  if [ -x "$ACTEON_CHROMIUM" ] && [ -x "$ACTEON_CHROMEDRIVER" ]; then
    return 0
  fi
  if ! command -v apt-get >/dev/null; then
    echo "browser: no apt-get to install chromium and chromium-driver" >&2
    return 1
  fi
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "browser: installing needs root or sudo" >&2; return 1; }
    sudo=(sudo)
  fi
  echo "browser: installing chromium and chromium-driver (Debian packages)" >&2
  local install=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends chromium chromium-driver)
  # A fresh machine may not have the package lists yet.
  "${install[@]}" >&2 || { "${sudo[@]}" apt-get update >&2 && "${install[@]}" >&2; }
}
