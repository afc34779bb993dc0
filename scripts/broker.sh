#!/usr/bin/env bash
# A local Kafka-compatible broker (Tansu) for tests and development.
#
#   scripts/broker.sh install   build Tansu into the cache once (about 11-25 min cold)
#   scripts/broker.sh run       run a broker in the foreground on 127.0.0.1:9092
#
# Sourced by scripts/test.sh for broker_install / broker_start / broker_stop.
# The cache lives in $ACTEON_CACHE_DIR (default ~/.cache/acteon) so every
# checkout on the machine shares one build.

TANSU_VERSION=0.6.0
# dynostore: the memory:// engine; libsql: the sqlite:// engine, whose data
# survives a broker restart (used by tests that kill the broker).
TANSU_FEATURES=dynostore,libsql
ACTEON_CACHE_DIR="${ACTEON_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/acteon}"
TANSU_ROOT="$ACTEON_CACHE_DIR/tansu-$TANSU_VERSION"
TANSU_BIN="$TANSU_ROOT/bin/tansu"

broker_install() {
  if [ -x "$TANSU_BIN" ]; then
    return 0
  fi
  echo "broker: building Tansu $TANSU_VERSION into $TANSU_ROOT (once per machine)" >&2
  mkdir -p "$ACTEON_CACHE_DIR"
  cargo install tansu --version "$TANSU_VERSION" --features "$TANSU_FEATURES" \
    --locked --root "$TANSU_ROOT" >&2
}

# A TCP port on 127.0.0.1 that nothing listens on now.
broker_free_port() {
  local port
  for _ in $(seq 1 50); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  return 1
}

# broker_start [storage-url]: starts Tansu on a free loopback port and waits
# until it accepts connections. Sets BROKER_PID, BROKER_LOG and exports
# ACTEON_KAFKA_BOOTSTRAP.
broker_start() {
  local storage="${1:-memory://tansu/}" port deadline
  port=$(broker_free_port) || { echo "broker: no free port" >&2; return 1; }
  BROKER_LOG="${BROKER_LOG:-$(mktemp -t acteon-broker.XXXXXX.log)}"
  "$TANSU_BIN" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "$storage" >"$BROKER_LOG" 2>&1 &
  BROKER_PID=$!
  deadline=$((SECONDS + 60))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
      echo "broker: Tansu exited during start-up; its log:" >&2
      tail -n 30 "$BROKER_LOG" >&2
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "broker: Tansu did not accept connections on port $port within 60 s" >&2
      broker_stop
      return 1
    fi
    sleep 0.2
  done
  export ACTEON_KAFKA_BOOTSTRAP="127.0.0.1:$port"
  echo "broker: Tansu $TANSU_VERSION (pid $BROKER_PID) on $ACTEON_KAFKA_BOOTSTRAP, log $BROKER_LOG" >&2
}

broker_stop() {
  if [ -n "${BROKER_PID:-}" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
    kill "$BROKER_PID" 2>/dev/null
    wait "$BROKER_PID" 2>/dev/null
  fi
  BROKER_PID=
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case "${1:-}" in
    install) broker_install ;;
    run)
      broker_install
      exec "$TANSU_BIN" broker --listener-url tcp://127.0.0.1:9092 \
        --advertised-listener-url tcp://127.0.0.1:9092 --storage-engine memory://tansu/
      ;;
    *) echo "usage: $0 install|run" >&2; exit 2 ;;
  esac
fi
