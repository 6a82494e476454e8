#!/usr/bin/env bash
# The release server's memory and query latency over HTTP on a log written by
# `AUTHLOG_BENCH_DIR=DIR cargo bench --bench audit`:
#   benches/audit_server.sh DIR
# Prints the server's resident memory after start-up (which indexes and verifies
# the whole log), after 300 queries by subject, client and session, and at most
# during a whole-log export; and the queries' latency as curl measures it.
set -euo pipefail
dir=${1:?usage: benches/audit_server.sh DATA_DIR}
cd "$(dirname "$0")/.."
cargo build --release --quiet
port=18089
token=bench-auditor-token-0123456789
AUTHLOG_DATA_DIR="$dir" AUTHLOG_LISTEN=127.0.0.1:$port AUTHLOG_AUDITOR_TOKEN=$token \
  AUTHLOG_LOG_LEVEL=warn ./target/release/authlog serve &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
start=$(date +%s.%N)
until curl -sf http://127.0.0.1:$port/readyz >/dev/null; do sleep 0.2; done
ready=$(date +%s.%N)
rss() { awk '/VmRSS/ {printf "%.0f", $2/1024}' /proc/$pid/status; }
echo "start-up (index catch-up and verification of the whole log): $(echo "$ready - $start" | bc) s; RSS $(rss) MiB"
q() { curl -s -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $token" "http://127.0.0.1:$port/admin/audit/events?limit=100&$1"; }
for kind in subject client_id session_id; do
  for i in $(seq 1 100); do
    case $kind in
      subject) q "subject=0190c0de-0000-7000-8000-$(printf %012d $((RANDOM * 7 % 20000)))" ;;
      client_id) q "client_id=client-$((RANDOM % 200))" ;;
      session_id) q "session_id=0190d00d-0000-7000-8000-$(printf %012d $((RANDOM * 3)))" ;;
    esac
  done | sort -n | awk -v k=$kind '{a[NR]=$1} END {printf "%s over HTTP (100 queries, limit 100): p50 %.1f ms, p99 %.1f ms\n", k, a[int(NR*0.5)]*1000, a[int(NR*0.99)]*1000}'
done
echo "RSS after the queries: $(rss) MiB"
peak=0
curl -s -H "Authorization: Bearer $token" "http://127.0.0.1:$port/admin/audit/export?proofs=false" -o /dev/null &
cpid=$!
while kill -0 $cpid 2>/dev/null; do r=$(rss); [ "$r" -gt "$peak" ] && peak=$r; sleep 0.05; done
echo "whole-log export: RSS at most $peak MiB during it; after $(rss) MiB"
