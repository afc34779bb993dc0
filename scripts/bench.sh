#!/usr/bin/env bash
# The full benchmark, as docs/benchmarks.md reports it: builds bus-bench in
# release mode, starts the local Kafka-compatible broker on a free loopback
# port (building it once, as the test command does), runs every scenario
# against the in-memory backend and the broker, and stops the broker.
#
#   scripts/bench.sh [--quick] [--out report.json] [--markdown report.md]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/broker.sh

cargo build --release --locked -p acteon-simulation --bin bus-bench
trap broker_stop EXIT
broker_install
broker_start
target/release/bus-bench --kafka "$ACTEON_KAFKA_BOOTSTRAP" --broker-pid "$BROKER_PID" "$@"
