#!/usr/bin/env bash
# Drives the server with an OpenAPI-driven fuzzer (Schemathesis), once with
# auth disabled and once enabled: no answer may be a 5xx, and every answer
# must conform to GET /openapi.json (status, content type, headers, body).
#
#   scripts/fuzz-api.sh              both runs against a debug build
#   ACTEON_FUZZ_EXAMPLES=500 ...     more cases per operation (default 40)
#   ACTEON_FUZZ_SEED=...             another seed (default fixed, so CI repeats)
#
# The server runs on the broker at ACTEON_KAFKA_BOOTSTRAP when it is set (as
# under scripts/test.sh), else on the in-memory backend.
#
# Schemathesis is installed from PyPI into a virtual environment in
# $ACTEON_CACHE_DIR once per machine, as the broker is. The two SSE
# endpoints are left out: a stream that opens never ends, and their refusals
# are covered by the black-box tests.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
ACTEON_CACHE_DIR="${ACTEON_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/acteon}"
VENV="$ACTEON_CACHE_DIR/schemathesis-$SCHEMATHESIS_VERSION"
EXAMPLES="${ACTEON_FUZZ_EXAMPLES:-40}"
SEED="${ACTEON_FUZZ_SEED:-20261201}"
ADMIN_KEY="fuzz-admin-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"

install() {
  echo "fuzz: installing Schemathesis $SCHEMATHESIS_VERSION into $VENV (once per machine)" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
}
if [ ! -x "$VENV/bin/st" ] && ! install; then
  rm -rf "$VENV"
  if [ "${CI:-}" = "true" ]; then
    echo "fuzz: Schemathesis could not be installed; CI never runs without it" >&2
    exit 1
  fi
  echo "fuzz: WARNING: no Schemathesis (python3 -m venv and PyPI are needed); skipped" >&2
  exit 0
fi

cargo build --locked -q -p acteon-server
work=$(mktemp -d -t acteon-fuzz.XXXXXX)
server_pid=
stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}
trap 'stop_server; rm -rf "$work"' EXIT

# start_server CONFIG: starts the server on a free port; sets URL.
start_server() {
  local config=$1 out="$work/stdout" line
  : >"$out"
  ACTEON_STATE__ENGINE=memory target/debug/acteon-server --config "$config" \
    --listen 127.0.0.1:0 --data-dir "$work/data" >"$out" 2>"$work/server.log" &
  server_pid=$!
  for _ in $(seq 1 100); do
    line=$(head -n 1 "$out")
    if [ -n "$line" ]; then
      URL=${line#acteon-server listening on }
      return 0
    fi
    sleep 0.1
  done
  echo "fuzz: the server did not start; its log:" >&2
  cat "$work/server.log" >&2
  return 1
}

CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance

# fuzz NAME CHECKS [schemathesis options]: one run against $URL.
fuzz() {
  local name=$1 checks=$2
  shift 2
  echo "fuzz: $name, $EXAMPLES examples per operation" >&2
  # From the scratch directory, where Schemathesis keeps its own files.
  (cd "$work" && "$VENV/bin/st" run "$URL/openapi.json" --checks "$checks" "$@" \
    --exclude-path-regex '^/v1/bus/subscribe/|/events$' \
    --max-examples "$EXAMPLES" --seed "$SEED" --request-timeout 10 \
    --warnings off --no-color) >"$work/$name.txt" 2>&1 || {
      cat "$work/$name.txt" >&2
      echo "fuzz: $name found failures (server log: $work/server.log)" >&2
      trap - EXIT
      stop_server
      return 1
    }
  tail -n 4 "$work/$name.txt" >&2
}

cat >"$work/open.toml" <<TOML
[audit]
flush_interval_ms = 20
TOML
start_server "$work/open.toml"
fuzz "auth disabled" "$CHECKS"
stop_server

hash=$(printf %s "$ADMIN_KEY" | sha256sum | cut -d' ' -f1)
cat >"$work/auth.toml" <<TOML
[audit]
flush_interval_ms = 20

[auth]
enabled = true

[[auth.keys]]
id = "fuzz-admin"
key_sha256 = "$hash"
grants = [{ namespace = "*", tenant = "*", ops = ["admin"] }]
TOML
start_server "$work/auth.toml"
# With the key, and (ignored_auth) without it: every operation that needs a
# key must refuse a request that has none.
fuzz "auth enabled" "$CHECKS,ignored_auth" -H "Authorization: Bearer $ADMIN_KEY"
stop_server
