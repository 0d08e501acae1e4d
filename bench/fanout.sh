#!/usr/bin/env bash
# Scenario 3, fan-out and catch-up: SUBSCRIBERS concurrent StreamReportEvents subscribers (over
# 100 HTTP/2 connections); REPORTS reports.generated webhooks delivered one every 50 ms; the time
# from each webhook's 2xx to the event on every subscriber; server RSS idle and with the
# subscribers. Then one subscriber replays a log of EVENTS report events from the beginning,
# with INTERNAL entries the stream must skip (view_changed, as ingest writes them) after each.
# On SQLite and PostgreSQL.
#
# Usage: bench/fanout.sh [SUBSCRIBERS] [REPORTS] [EVENTS] [INTERNAL]
#        (defaults 1000, 100, 1000000, 0)
# Writes bench/results/fanout-<date>.md and prints it.
source "$(dirname "$0")/lib.sh"
SUBSCRIBERS="${1:-1000}"
REPORTS="${2:-100}"
EVENTS="${3:-1000000}"
INTERNAL="${4:-0}"
OUT="bench/results/fanout-$(date -u +%Y-%m-%d)$( [ "$INTERNAL" = 0 ] || echo "-internal-$INTERNAL").md"

for backend in sqlite postgres; do
    url="$(fresh_db "$backend" readiness_bench_fanout)"
    "$SEEDER" seed --database-url "$url" --to 1000 --events "$EVENTS" \
        --internal-per-event "$INTERNAL" > "$WORK/seed-$backend.json"
    start_server "$url"
    idle="$(rss "$SERVER_PID")"
    "$BENCH" fanout --target "http://$GRPC_ADDR" --webhook "http://$HTTP_ADDR" --secret "$SECRET" \
        --subscribers "$SUBSCRIBERS" --reports "$REPORTS" > "$WORK/fanout-$backend.json"
    with_subscribers="$(peak_rss "$SERVER_PID")"
    "$BENCH" catchup --target "http://$GRPC_ADDR" > "$WORK/catchup-$backend.json"
    stop_server
    drop_db "$backend" readiness_bench_fanout
    python3 - "$WORK/fanout-$backend.json" "$WORK/catchup-$backend.json" "$backend" "$idle" "$with_subscribers" >> "$WORK/rows" <<'PY'
import json, sys
f, c = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
backend, idle, peak = sys.argv[3:]
lat = f["ack_to_subscriber_ms"]
print(f"| {backend} | {f['subscribers']} | {f['seconds_to_subscribe_all']} | {f['deliveries_received']} of {f['deliveries_expected']} | {lat['p50']} | {lat['p99']} | {lat['max']} | {idle} | {peak} | {c['events']} | {c['seconds']} | {c['events_per_second']:.0f} |")
PY
done

{
    echo "Fan-out and catch-up (StreamReportEvents), $(machine); clients on the same machine."
    echo "$REPORTS webhooks, one every 50 ms; latency from each webhook's 2xx at the sender to the event at each subscriber."
    echo "Catch-up log: $EVENTS report events, each followed by $INTERNAL internal entries the stream skips ($(( EVENTS * (INTERNAL + 1) )) entries in all)."
    echo
    echo "| backend | subscribers | s to subscribe all | events received | p50 ms | p99 ms | max ms | idle RSS MiB | peak RSS MiB with subscribers | catch-up events | catch-up s | catch-up events/s |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    cat "$WORK/rows"
} | tee "$OUT"
