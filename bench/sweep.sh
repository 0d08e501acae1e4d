#!/usr/bin/env bash
# Ingest on PostgreSQL at 64 senders for several `ingest_committers` values (tuning aid), with
# how busy the whole machine was (all processes, from /proc/stat) during each run.
# Usage: bench/sweep.sh [USERS] [COMMITTERS...]   (defaults 2000; 1 2 4 8)
# Writes bench/results/sweep-sslmode-<mode>-<date>.txt; BENCH_PG_SSLMODE=prefer to measure over TLS.
source "$(dirname "$0")/lib.sh"
USERS="${1:-2000}"; shift || true
OUT="bench/results/sweep-sslmode-$PG_SSLMODE-$(date -u +%Y-%m-%d).txt"
: > "$OUT"
for n in ${@:-1 2 4 8}; do
    url="$(fresh_db postgres readiness_bench_sweep)"
    start_server "$url" --ingest-committers "$n"
    before="$(head -1 /proc/stat)"
    "$BIN" simulate --target "http://$HTTP_ADDR" --secret "$SECRET" --users "$USERS" \
        --concurrency 64 > "$WORK/s.json"
    busy="$(python3 -c '
import sys
a, b = ([int(x) for x in l.split()[1:]] for l in sys.argv[1:])
d = [y - x for x, y in zip(a, b)]
print(round(100 * (1 - (d[3] + d[4]) / sum(d))))' "$before" "$(head -1 /proc/stat)")"
    echo "committers=$n acks/s=$(field "$WORK/s.json" acknowledged_per_second) p99_ms=$(field "$WORK/s.json" ack_latency_ms.p99) machine_busy=${busy}%" | tee -a "$OUT"
    stop_server
    drop_db postgres readiness_bench_sweep
done
