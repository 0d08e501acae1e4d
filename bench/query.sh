#!/usr/bin/env bash
# Scenario 2, query: GetUserReadiness requests/s and latency with 1 and 64 concurrent request
# streams (over 4 HTTP/2 connections) against a store of USERS users with 2.5 accounts each on
# average (seeded directly), on SQLite and PostgreSQL; the same load against the echo server
# (tonic with a canned answer) is the reference. The service's read model is filled first (each
# user read once), so this is the steady state of a warm replica.
#
# Usage: bench/query.sh [USERS] [SECONDS]   (defaults 100000 and 10)
# Writes bench/results/query-<date>.md (or $BENCH_OUT) and prints it. BENCH_BUILD: see lib.sh.
source "$(dirname "$0")/lib.sh"
USERS="${1:-100000}"
SECS="${2:-10}"
OUT="${BENCH_OUT:-bench/results/query-$(date -u +%Y-%m-%d).md}"

# Row: server|streams|ok/s|p50|p90|p99|max|cpu%|peak rss
measure() {
    local label="$1" c="$2" cpu0 cpu1
    cpu0="$(cpu_secs "$SERVER_PID")"
    "$BENCH" query --target "http://$GRPC_ADDR" --users "$USERS" --concurrency "$c" \
        --connections "$(( c < 4 ? c : 4 ))" --seconds "$SECS" > "$WORK/$label-$c.json"
    cpu1="$(cpu_secs "$SERVER_PID")"
    python3 - "$WORK/$label-$c.json" "$label" "$c" "$cpu0" "$cpu1" "$(peak_rss "$SERVER_PID")" "$SECS" >> "$WORK/rows" <<'PY'
import json, sys
path, label, c, cpu0, cpu1, rss, secs = sys.argv[1:]
s = json.load(open(path))
lat = s["latency_ms"]
cpu = (float(cpu1) - float(cpu0)) / (float(secs) + 2) * 100  # measured window + warm-up
errors = sum(v for k, v in s["codes"].items() if k != "Ok")
print(f"{label}|{c}|{s['ok_per_second']:.0f}|{errors}|{lat['p50']}|{lat['p90']}|{lat['p99']}|{lat['max']}|{cpu:.0f}|{rss}")
PY
}

for backend in sqlite postgres; do
    url="$(fresh_db "$backend" readiness_bench_query)"
    "$SEEDER" seed --database-url "$url" --to "$USERS" > "$WORK/seed-$backend.json"
    echo "$backend: $(field "$WORK/seed-$backend.json" users_in_store) users, $(field "$WORK/seed-$backend.json" accounts_in_store) accounts, seeded in $(field "$WORK/seed-$backend.json" users_seconds) s" >> "$WORK/seeded"
    start_server "$url"
    # Steady state: every seeded user read once first, so the read model holds their views (a
    # cold replica's first reads are database reads; reads.sh shows a cold 1,000,000-user mix).
    "$BENCH" query --target "http://$GRPC_ADDR" --users "$USERS" --concurrency 64 --seconds 1 \
        --warmup 0 --prefill > /dev/null
    for c in 1 64; do measure "$backend" "$c"; done
    stop_server
    drop_db "$backend" readiness_bench_query
done
start_echo
for c in 1 64; do measure echo "$c"; done
stop_server

{
    echo "Query (GetUserReadiness), $(machine); load generator on the same machine."
    echo "Stores: $(paste -sd';' "$WORK/seeded" | sed 's/;/; /g')."
    echo
    echo "| server | streams | ok req/s | echo req/s | ratio | errors | p50 ms | p90 ms | p99 ms | max ms | server CPU % | peak RSS MiB |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    while IFS='|' read -r label c rate errors p50 p90 p99 max cpu peak; do
        echo_rate="$(awk -F'|' -v c="$c" '$1=="echo" && $2==c {print $3}' "$WORK/rows")"
        ratio="$(python3 -c "print(f'{$rate/$echo_rate:.0%}')")"
        echo "| $label | $c | $rate | $echo_rate | $ratio | $errors | $p50 | $p90 | $p99 | $max | $cpu | $peak |"
    done < "$WORK/rows"
} | tee "$OUT"
