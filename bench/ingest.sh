#!/usr/bin/env bash
# Ingest benchmark (issue "Benchmarks", scenario 1): sustained signed webhooks/s with 1, 16 and 64
# concurrent senders, on SQLite and PostgreSQL, with the raw durable one-row-insert rate of the same
# machine as the reference (pgbench; a Python sqlite3 loop with the same WAL + synchronous=FULL
# setting). Everything runs on loopback on this machine, load generator included.
#
# Usage: bench/ingest.sh [USERS] [SECONDS_FOR_REFERENCES]   (defaults 2000 and 10)
# Writes a Markdown table to bench/results/ingest-<date>.md and prints it.
set -euo pipefail
cd "$(dirname "$0")/.."
USERS="${1:-2000}"
REF_SECS="${2:-10}"
PG="postgres://postgres@127.0.0.1:5432"
SECRET="bench-secret"
BIN=target/release/readiness
cargo build --release --quiet --bin readiness
mkdir -p bench/results
OUT="bench/results/ingest-$(date -u +%Y-%m-%d).md"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Server CPU seconds (user+system) and peak RSS (MiB) from /proc.
cpu_secs() { awk '{printf "%.2f", ($14+$15)/100}' "/proc/$1/stat"; }
peak_rss() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }

run_backend() {
    local backend="$1" url="$2"
    local http grpc pid
    http="$(free_port)"; grpc="$(free_port)"
    READINESS_DATABASE_URL="$url" READINESS_ARGYLE_SECRETS="$SECRET" RUST_LOG=warn \
        READINESS_DATABASE_MAX_CONNECTIONS=32 \
        "$BIN" serve --http-addr "127.0.0.1:$http" --grpc-addr "127.0.0.1:$grpc" &
    pid=$!
    for _ in $(seq 1 100); do "$BIN" healthcheck --http-addr "127.0.0.1:$http" >/dev/null 2>&1 && break; sleep 0.1; done
    echo "idle_rss_mib=$(peak_rss $pid)" >> "$WORK/$backend.idle"
    for c in 1 16 64; do
        local cpu0; cpu0="$(cpu_secs $pid)"
        "$BIN" simulate --target "http://127.0.0.1:$http" --secret "$SECRET" --users "$USERS" \
            --concurrency "$c" --seed "$c" > "$WORK/$backend-$c.json"
        local cpu1; cpu1="$(cpu_secs $pid)"
        python3 - "$WORK/$backend-$c.json" "$backend" "$c" "$cpu0" "$cpu1" "$(peak_rss $pid)" >> "$WORK/rows" <<'PY'
import json, sys
path, backend, c, cpu0, cpu1, rss = sys.argv[1:]
s = json.load(open(path))
lat = s["ack_latency_ms"]
cpu = (float(cpu1) - float(cpu0)) / s["seconds"] * 100
ok = s["statuses"].get("200", 0)
print(f"{backend}|{c}|{s['deliveries']}|{ok}|{s['acknowledged_per_second']:.0f}|{lat['p50']}|{lat['p90']}|{lat['p99']}|{lat['max']}|{cpu:.0f}|{rss}")
PY
    done
    kill -TERM "$pid"; wait "$pid" || true
}

# References: the raw durable one-row insert rate.
psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS readiness_bench_ref" -qc "CREATE DATABASE readiness_bench_ref"
psql "$PG/readiness_bench_ref" -qc "CREATE TABLE t (id bigserial primary key, body text not null)"
echo "INSERT INTO t (body) VALUES ('{\"event\":\"accounts.connected\"}');" > "$WORK/insert.sql"
for c in 1 16 64; do
    tps="$(pgbench -n -c "$c" -j 2 -T "$REF_SECS" -f "$WORK/insert.sql" "$PG/readiness_bench_ref" 2>/dev/null \
        | awk '/^tps/ {printf "%.0f", $3}')"
    echo "postgres|$c|$tps" >> "$WORK/refs"
done
psql "$PG/postgres" -qc "DROP DATABASE readiness_bench_ref"
sqlite_ref="$(python3 - "$WORK/ref.db" "$REF_SECS" <<'PY'
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL"); db.execute("PRAGMA synchronous=FULL")
db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
n, end = 0, time.time() + float(sys.argv[2])
while time.time() < end:
    db.execute("BEGIN"); db.execute("INSERT INTO t (body) VALUES (?)", ('{"event":"accounts.connected"}',)); db.execute("COMMIT"); n += 1
print(round(n / float(sys.argv[2])))
PY
)"
for c in 1 16 64; do echo "sqlite|$c|$sqlite_ref" >> "$WORK/refs"; done

run_backend sqlite "sqlite://$WORK/bench.db?mode=rwc"
psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS readiness_bench" -qc "CREATE DATABASE readiness_bench"
run_backend postgres "$PG/readiness_bench"
psql "$PG/postgres" -qc "DROP DATABASE readiness_bench"

{
    echo "Ingest, $(date -u +%Y-%m-%d), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); $USERS simulated users per run; load generator on the same machine."
    echo
    echo "| backend | senders | deliveries | 2xx | acks/s | raw inserts/s | ratio | p50 ms | p90 ms | p99 ms | max ms | server CPU % | peak RSS MiB |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    while IFS='|' read -r backend c total ok rate p50 p90 p99 max cpu rss; do
        ref="$(awk -F'|' -v b="$backend" -v c="$c" '$1==b && $2==c {print $3}' "$WORK/refs")"
        ratio="$(python3 -c "print(f'{$rate/$ref:.0%}' if $ref else '-')")"
        echo "| $backend | $c | $total | $ok | $rate | $ref | $ratio | $p50 | $p90 | $p99 | $max | $cpu | $rss |"
    done < "$WORK/rows"
    echo
    echo "Idle RSS after start-up: sqlite $(cut -d= -f2 "$WORK/sqlite.idle") MiB, postgres $(cut -d= -f2 "$WORK/postgres.idle") MiB."
} | tee "$OUT"
