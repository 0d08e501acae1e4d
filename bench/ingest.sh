#!/usr/bin/env bash
# Scenario 1, ingest: sustained signed webhooks/s with 1, 16 and 64 concurrent senders, on SQLite
# and PostgreSQL, against the raw durable one-row-insert rate of the same machine (pgbench at the
# same concurrency; a Python sqlite3 loop with the same WAL + synchronous=FULL setting), and the
# same traffic against the echo server (HTTP + load generator only, no work behind it).
#
# Usage: bench/ingest.sh [USERS] [SECONDS_FOR_REFERENCES]   (defaults 2000 and 10)
# Writes bench/results/ingest-<date>.md (or $BENCH_OUT) and prints it. BENCH_BUILD: see lib.sh.
source "$(dirname "$0")/lib.sh"
USERS="${1:-2000}"
REF_SECS="${2:-10}"
OUT="${BENCH_OUT:-bench/results/ingest-$(date -u +%Y-%m-%d).md}"

# CSV row: backend|senders|deliveries|2xx|acks/s|p50|p90|p99|max|cpu%|peak rss
measure() {
    local label="$1" c="$2"
    local cpu0 cpu1; cpu0="$(cpu_secs "$SERVER_PID")"
    "$BIN" simulate --target "http://$HTTP_ADDR" --secret "$SECRET" --users "$USERS" \
        --concurrency "$c" --seed "$c" > "$WORK/$label-$c.json"
    cpu1="$(cpu_secs "$SERVER_PID")"
    python3 - "$WORK/$label-$c.json" "$label" "$c" "$cpu0" "$cpu1" "$(peak_rss "$SERVER_PID")" >> "$WORK/rows" <<'PY'
import json, sys
path, label, c, cpu0, cpu1, rss = sys.argv[1:]
s = json.load(open(path))
lat = s["ack_latency_ms"]
cpu = (float(cpu1) - float(cpu0)) / s["seconds"] * 100
ok = s["statuses"].get("200", 0)
print(f"{label}|{c}|{s['deliveries']}|{ok}|{s['acknowledged_per_second']:.0f}|{lat['p50']}|{lat['p90']}|{lat['p99']}|{lat['max']}|{cpu:.0f}|{rss}")
PY
}

# References: the raw durable one-row insert rate.
# PostgreSQL: what an inbox must at least do per delivery, a durable one-row insert with a
# unique hash and a JSON body (the same reference as bench/ingest_wrk.sh).
REF_DB="$(fresh_db postgres readiness_bench_ref)"
psql "$REF_DB" -qc "CREATE TABLE raw (id bigserial primary key, hash text unique not null, body jsonb not null, received_at timestamptz default now())"
cat > "$WORK/insert.sql" <<'SQL'
INSERT INTO raw (hash, body) VALUES (md5(random()::text || clock_timestamp()::text), '{"event": "accounts.updated", "name": "readiness-bench", "data": {"account": "0187c66e-e7e5-811c-b006-2232f00f426a", "user": "018051aa-f7a9-a0db-2f38-6cfa325e9d69"}}');
SQL
for c in 1 16 64; do
    tps="$(pgbench -n -c "$c" -j 2 -T "$REF_SECS" -f "$WORK/insert.sql" "$REF_DB" 2>/dev/null \
        | awk '/^tps/ {printf "%.0f", $3}')"
    echo "postgres|$c|$tps" >> "$WORK/refs"
done
drop_db postgres readiness_bench_ref
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

for backend in sqlite postgres; do
    url="$(fresh_db "$backend" readiness_bench)"
    start_server "$url"
    echo "$backend idle RSS $(rss "$SERVER_PID") MiB" >> "$WORK/idle"
    for c in 1 16 64; do measure "$backend" "$c"; done
    stop_server
    drop_db "$backend" readiness_bench
done
start_echo
for c in 1 16 64; do measure echo "$c"; done
stop_server

{
    echo "Ingest, $(machine); $USERS simulated users per run; load generator on the same machine."
    echo
    echo "| server | senders | deliveries | 2xx | acks/s | raw inserts/s | ratio | p50 ms | p90 ms | p99 ms | max ms | server CPU % | peak RSS MiB |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    while IFS='|' read -r label c total ok rate p50 p90 p99 max cpu peak; do
        ref="$(awk -F'|' -v b="$label" -v c="$c" '$1==b && $2==c {print $3}' "$WORK/refs")"
        ratio=-; [ -n "$ref" ] && ratio="$(python3 -c "print(f'{$rate/$ref:.0%}')")"
        echo "| $label | $c | $total | $ok | $rate | ${ref:--} | $ratio | $p50 | $p90 | $p99 | $max | $cpu | $peak |"
    done < "$WORK/rows"
    echo
    echo "Idle RSS after start-up: $(paste -sd';' "$WORK/idle" | sed 's/;/; /g')."
} | tee "$OUT"
