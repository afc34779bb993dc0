#!/usr/bin/env bash
# The whole test suite on a fresh machine: checks formatting and lints, builds
# (once) and starts a local Kafka-compatible broker on a free loopback port,
# installs headless Chromium when missing, runs every test of the workspace
# and the examples against them, and stops the broker, also when tests fail.
#
# With CI=true a broker or browser that cannot be installed or started fails
# the run. Elsewhere the run goes on without them, and the Kafka and browser
# tests say on stderr that they were skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/broker.sh
source scripts/browser.sh

started=$SECONDS
if [ "${CI:-}" = "true" ]; then
  # A clean clone builds once: incremental caches would only take disk.
  export CARGO_INCREMENTAL=0
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

trap broker_stop EXIT
if broker_install && broker_start; then
  # Kafka tests fail, rather than skip, if the variable goes missing.
  export ACTEON_REQUIRE_KAFKA=1
  export ACTEON_TANSU_BIN="$TANSU_BIN"
elif [ "${CI:-}" = "true" ]; then
  echo "test: the broker could not be started; CI never runs without it" >&2
  exit 1
else
  echo "test: WARNING: no broker; the Kafka tests will be skipped" >&2
  unset ACTEON_KAFKA_BOOTSTRAP
fi

if browser_install; then
  export ACTEON_REQUIRE_BROWSER=1
elif [ "${CI:-}" = "true" ]; then
  echo "test: Chromium could not be installed; CI never runs without it" >&2
  exit 1
else
  echo "test: WARNING: no Chromium; the browser tests will be skipped" >&2
fi

cargo test --workspace --locked
# The API fuzzed from its OpenAPI document, auth disabled and enabled.
scripts/fuzz-api.sh
if [ -n "${ACTEON_KAFKA_BOOTSTRAP:-}" ]; then
  # The competing-agents simulation against the same broker; it exits
  # non-zero if a record reached both agents, neither, or not the tail.
  cargo run --locked -p acteon-simulation --features bus --example bus_simulation
  # The at-least-once task queue and the reconciler on durable
  # subscriptions; each exits non-zero if a task or event was lost,
  # done again after its ack, or applied out of order.
  cargo run --locked -p acteon-simulation --example work_queue
  cargo run --locked -p acteon-simulation --example reconciler
fi
# The benchmark harness, every scenario small, on the in-memory backend and
# the broker: it exits non-zero if its report is not sane (failed requests,
# undelivered events, impossible figures). The figures of this debug build
# mean nothing; scripts/bench.sh makes the real ones.
cargo run --locked -p acteon-simulation --bin bus-bench -- --quick \
  ${ACTEON_KAFKA_BOOTSTRAP:+--kafka "$ACTEON_KAFKA_BOOTSTRAP"} \
  --out target/bus-bench-quick.json --markdown target/bus-bench-quick.md
echo "test: finished in $((SECONDS - started)) s" >&2
