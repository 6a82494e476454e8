#!/usr/bin/env bash
# authlog's whole test suite, from a fresh machine: installs and starts what the
# tests need, then runs every test of the workspace.
#
# What it installs: authlib (PyPI) in a virtualenv under target/, for the
# interoperability test; Debian's Chromium and playwright-core (npm), for the
# browser tests; the Kafka-protocol broker tansu (crates.io, built once into
# ~/.cargo/bin, about 9 minutes on 2 cores), which the Kafka tests start and stop
# themselves; PostgreSQL (Debian package), started here on a private port in a
# directory under target/ and stopped when the suite ends; KurrentDB cannot be
# installed on the test machines: its contract run happens only when
# AUTHLOG_TEST_KURRENTDB_URL names a server, and the suite says so when not.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
    echo "tests/run.sh: cargo is required (https://rustup.rs)" >&2
    exit 1
fi

# An independent OIDC relying-party library, reused between runs.
venv=target/interop-venv
# Reinstalled whenever tests/interop/requirements.txt changes.
req_sum="$(sha256sum tests/interop/requirements.txt | cut -d' ' -f1)"
if [ "$(cat "$venv/.requirements" 2>/dev/null)" != "$req_sum" ] || ! "$venv/bin/python" -c "import authlib" 2>/dev/null; then
    echo "tests/run.sh: installing the Python test packages (authlib, ocsf-json-schema, ...) into $venv"
    mkdir -p target
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
    echo "$req_sum" > "$venv/.requirements"
fi
export AUTHLOG_TEST_PYTHON="$PWD/$venv/bin/python"

# A real browser for the sign-in pages.
if ! command -v chromium >/dev/null; then
    echo "tests/run.sh: installing Chromium (Debian package) for the browser test"
    sudo_=""
    [ "$(id -u)" -eq 0 ] || sudo_="sudo"
    $sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq chromium >/dev/null
fi
export AUTHLOG_TEST_CHROMIUM="$(command -v chromium)"
if [ ! -d tests/browser/node_modules/playwright-core ]; then
    echo "tests/run.sh: installing playwright-core (npm) for the browser test"
    (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi
export AUTHLOG_TEST_NODE="$(command -v node)"

# A real Kafka-protocol broker for the sink tests. tansu 0.6.0 builds on this
# toolchain; its topics live in SQLite so they survive the broker restart the
# tests make. No Kafka test is skipped: without the broker they fail and say why.
tansu_bin="$(command -v tansu || true)"
if [ -z "$tansu_bin" ] || ! "$tansu_bin" --version 2>/dev/null | grep -q "0.6.0"; then
    echo "tests/run.sh: installing the tansu broker (cargo install tansu 0.6.0) for the Kafka tests"
    cargo install tansu --version 0.6.0 --locked --features dynostore,libsql --quiet
    tansu_bin="$(command -v tansu || echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu")"
fi
export AUTHLOG_TEST_TANSU="$tansu_bin"

# A real PostgreSQL for the PostgreSQL store and the two-node tests: a cluster
# of our own (trust auth on loopback only), fsync on, as in production.
pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
    echo "tests/run.sh: installing PostgreSQL (Debian package) for the PostgreSQL store tests"
    sudo_=""
    [ "$(id -u)" -eq 0 ] || sudo_="sudo"
    $sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq postgresql >/dev/null
    pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
fi
# A free loopback port unless one is given: another PostgreSQL (or a second
# checkout's test run) may hold the usual ones.
pg_port="${AUTHLOG_TEST_PG_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
pg_dir="$PWD/target/test-postgres"
pg_user=""
# PostgreSQL refuses to run as root: as root, run it as the postgres user.
if [ "$(id -u)" -eq 0 ]; then
    pg_user="postgres"
    id postgres >/dev/null 2>&1 || useradd --system --home-dir "$pg_dir" postgres
fi
as_pg() { if [ -n "$pg_user" ]; then su "$pg_user" -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
# The postgres user may not be able to reach into this checkout (a clone in a
# mode-0700 directory such as mktemp's): then its data lives under /tmp.
mkdir -p "$PWD/target"
if [ -n "$pg_user" ] && ! as_pg "test -x '$PWD/target'" 2>/dev/null; then
    pg_dir="${TMPDIR:-/tmp}/authlog-test-postgres-$(printf %s "$PWD" | sha256sum | cut -c1-12)"
fi
if [ -f "$pg_dir/data/postmaster.pid" ]; then
    as_pg "'$pg_bin/pg_ctl' -D '$pg_dir/data' stop -m immediate" >/dev/null 2>&1 || true
fi
rm -rf "$pg_dir"
mkdir -p "$pg_dir"
[ -z "$pg_user" ] || chown "$pg_user" "$pg_dir"
as_pg "'$pg_bin/initdb' -D '$pg_dir/data' -A trust -U authlog --no-instructions" >/dev/null
if ! command -v openssl >/dev/null; then
    echo "tests/run.sh: installing openssl (Debian package) for the PostgreSQL TLS test"
    sudo_=""
    [ "$(id -u)" -eq 0 ] || sudo_="sudo"
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq openssl >/dev/null
fi
# TLS on, with a CA of the run's own, for the test of TLS to PostgreSQL
# (ca.pem is what a client trusts; other-ca.pem is one it must refuse).
(
    cd "$pg_dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=authlog test CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=another CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout other-ca.key -out other-ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' > server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile server.ext -out server.pem 2>/dev/null
    chmod 600 server.key
    [ -z "$pg_user" ] || chown "$pg_user" server.key server.pem
)
as_pg "'$pg_bin/pg_ctl' -D '$pg_dir/data' -l '$pg_dir/server.log' -w -o \"-p $pg_port -k '$pg_dir' -c listen_addresses=127.0.0.1 -c max_connections=400 -c ssl=on -c ssl_cert_file='$pg_dir/server.pem' -c ssl_key_file='$pg_dir/server.key'\" start" >/dev/null
stop_pg() { as_pg "'$pg_bin/pg_ctl' -D '$pg_dir/data' stop -m fast" >/dev/null 2>&1 || true; }
# Plain connections for most tests; the TLS test asks for TLS itself.
export AUTHLOG_TEST_POSTGRES_URL="postgres://authlog@127.0.0.1:$pg_port/postgres?sslmode=disable"
export AUTHLOG_TEST_POSTGRES_CA="$pg_dir/ca.pem"
export AUTHLOG_TEST_POSTGRES_OTHER_CA="$pg_dir/other-ca.pem"

log="$(mktemp)"
trap 'rm -f "$log"; stop_pg' EXIT
set +e
# KurrentDB: no server can be installed here; its contract suite runs only
# against a server named by AUTHLOG_TEST_KURRENTDB_URL.
skip=()
if [ -z "${AUTHLOG_TEST_KURRENTDB_URL:-}" ]; then
    skip=(--skip contract::kurrentdb::)
    kurrent_note="KurrentDB contract suite: NOT RUN (AUTHLOG_TEST_KURRENTDB_URL is not set; no KurrentDB server on this machine)"
else
    kurrent_note="KurrentDB contract suite: run against $(printf '%s' "$AUTHLOG_TEST_KURRENTDB_URL" | sed -E 's#//[^@/]*@#//#; s#\?.*##')"
fi
echo "tests/run.sh: $kurrent_note"
cargo test --workspace --locked -- "${skip[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1); if ($i ~ /^ignored;?$/) s += $(i-1) } }
     END { printf "\nsuite: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
echo "$kurrent_note"
exit "$status"
