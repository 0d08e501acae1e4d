#!/usr/bin/env bash
# Builds side by side on PostgreSQL ingest, with the database's own counters: each build serves a
# fresh database, this tree's `readiness simulate` posts the same deliveries (2,000 users, seed 64)
# at 64 senders, and the row gives acks/s, p99, the server's CPU seconds and what PostgreSQL did
# (commits, rows inserted and updated). Rounds alternate the builds, so drift hits them alike.
#
# Usage: bench/ingest_ab.sh ROUNDS DIR...   (each DIR holds a `readiness` binary, e.g. a worktree's
# target/release; `.` stands for this tree's). Writes bench/results/ingest-ab-<date>.md (or $BENCH_OUT).
source "$(dirname "$0")/lib.sh"
ROUNDS="$1"; shift
OUT="${BENCH_OUT:-bench/results/ingest-ab-$(date -u +%Y-%m-%d).md}"
{
    echo "PostgreSQL ingest, $(machine); 2,000 simulated users, seed 64, 64 senders, fresh database per run."
    echo
    echo "| round | build | deliveries | acks/s | p99 ms | server CPU s | commits | rows inserted | rows updated |"
    echo "|---|---|---|---|---|---|---|---|---|"
} > "$WORK/table"
for round in $(seq 1 "$ROUNDS"); do
    for dir in "$@"; do
        [ "$dir" = . ] && dir=target/release
        SERVICE="$dir/readiness"
        url="$(fresh_db postgres readiness_bench_ab)"
        start_server "$url"
        "$BIN" simulate --target "http://$HTTP_ADDR" --secret "$SECRET" --users 2000 \
            --concurrency 64 --seed 64 > "$WORK/sim.json"
        cpu="$(cpu_secs "$SERVER_PID")"
        stop_server
        db="$(psql "${url%%\?*}" -Atc "SELECT xact_commit || '|' || tup_inserted || '|' || tup_updated FROM pg_stat_database WHERE datname = current_database()")"
        echo "| $round | $dir | $(field "$WORK/sim.json" deliveries) | $(python3 -c "import json; print(round(json.load(open('$WORK/sim.json'))['acknowledged_per_second']))") | $(field "$WORK/sim.json" ack_latency_ms.p99) | $cpu | ${db//|/ | } |" >> "$WORK/table"
        drop_db postgres readiness_bench_ab
    done
done
cp "$WORK/table" "$OUT"
cat "$OUT"
