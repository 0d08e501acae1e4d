#!/usr/bin/env bash
# Ingest on PostgreSQL at 64 senders for several `ingest_committers` values (tuning aid).
# Usage: bench/sweep.sh [USERS] [COMMITTERS...]   (defaults 2000; 1 2 4 8)
source "$(dirname "$0")/lib.sh"
USERS="${1:-2000}"; shift || true
for n in "${@:-1 2 4 8}"; do
    url="$(fresh_db postgres readiness_bench_sweep)"
    start_server "$url" --ingest-committers "$n"
    "$BIN" simulate --target "http://$HTTP_ADDR" --secret "$SECRET" --users "$USERS" \
        --concurrency 64 > "$WORK/s.json"
    echo "committers=$n acks/s=$(field "$WORK/s.json" acknowledged_per_second) p99=$(field "$WORK/s.json" ack_latency_ms.p99)"
    stop_server
    drop_db postgres readiness_bench_sweep
done
