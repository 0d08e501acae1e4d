#!/usr/bin/env bash
# Scenario 4, scale: the same store grown from 10,000 to 100,000 to 1,000,000 users (2.5 accounts
# each on average); at each size, GetUserReadiness at 64 streams and ingest of new simulated
# users at 16 senders; at the largest size, the query plans of the hot paths. On SQLite and
# PostgreSQL.
#
# Usage: bench/scale.sh [SIZES] [SECONDS] [INGEST_USERS]
#        (defaults "10000 100000 1000000", 10, 500)
# Writes bench/results/scale-<date>.md and bench/results/plans-<date>.md and prints them.
source "$(dirname "$0")/lib.sh"
SIZES="${1:-10000 100000 1000000}"
SECS="${2:-10}"
INGEST_USERS="${3:-500}"
OUT="bench/results/scale-$(date -u +%Y-%m-%d).md"
PLANS="bench/results/plans-$(date -u +%Y-%m-%d).md"
: > "$PLANS"

for backend in sqlite postgres; do
    url="$(fresh_db "$backend" readiness_bench_scale)"
    from=0
    for size in $SIZES; do
        "$SEEDER" seed --database-url "$url" --from "$from" --to "$size" > "$WORK/seed.json"
        from="$size"
        start_server "$url"
        "$BENCH" query --target "http://$GRPC_ADDR" --users "$size" --concurrency 64 \
            --connections 4 --seconds "$SECS" > "$WORK/query.json"
        "$BIN" simulate --target "http://$HTTP_ADDR" --secret "$SECRET" --users "$INGEST_USERS" \
            --concurrency 16 --seed "$size" > "$WORK/ingest.json"
        stop_server
        python3 - "$WORK/seed.json" "$WORK/query.json" "$WORK/ingest.json" "$backend" "$size" >> "$WORK/rows" <<'PY'
import json, sys
seed, q, i = (json.load(open(p)) for p in sys.argv[1:4])
backend, size = sys.argv[4:]
ql, il = q["latency_ms"], i["ack_latency_ms"]
print(f"| {backend} | {int(size):,} | {seed['accounts_in_store']:,} | {q['ok_per_second']:.0f} | {ql['p50']} | {ql['p99']} | {i['acknowledged_per_second']:.0f} | {il['p50']} | {il['p99']} |")
PY
    done
    "$BENCH" explain --database-url "$url" --users "$from" > "$WORK/plans.json"
    python3 - "$WORK/plans.json" "$backend" "$from" >> "$PLANS" <<'PY'
import json, sys
plans = json.load(open(sys.argv[1]))
print(f"### {sys.argv[2]}, {int(sys.argv[3]):,} users\n")
for name, lines in plans.items():
    print(f"{name}:\n\n```\n" + "\n".join(lines) + "\n```\n")
PY
    drop_db "$backend" readiness_bench_scale
done

{
    echo "Scale, $(machine); query: GetUserReadiness, 64 streams, ${SECS} s; ingest: $INGEST_USERS new simulated users, 16 senders; clients on the same machine."
    echo
    echo "| backend | users | accounts | query req/s | query p50 ms | query p99 ms | ingest acks/s | ingest p50 ms | ingest p99 ms |"
    echo "|---|---|---|---|---|---|---|---|---|"
    cat "$WORK/rows"
    echo
    echo "Query plans at the largest size: bench/results/$(basename "$PLANS")."
} | tee "$OUT"
