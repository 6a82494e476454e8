#!/usr/bin/env bash
# authlog's whole test suite, from a fresh machine: installs and starts what the
# tests need, then runs every test of the workspace.
#
# Today the suite needs only the Rust toolchain: the embedded store has no server.
# Later parts (a Kafka-protocol broker, PostgreSQL, a headless browser, OIDC
# client libraries) are installed and started here, so this stays one command.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
    echo "tests/run.sh: cargo is required (https://rustup.rs)" >&2
    exit 1
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1); if ($i ~ /^ignored;?$/) s += $(i-1) } }
     END { printf "\nsuite: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
