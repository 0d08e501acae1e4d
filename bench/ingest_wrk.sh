#!/usr/bin/env bash
# Scenario 6, ingest against the raw insert rate, with a load generator that does not saturate the
# cores: wrk (Debian) posts pre-signed, distinct deliveries (bench/ingest_wrk.lua) from 64
# connections on 2 threads to the service on PostgreSQL and on SQLite. The reference, in the same
# run: pgbench, 64 clients over TCP on loopback, one durable INSERT per transaction into
# raw(id bigserial primary key, hash text unique not null, body jsonb not null, received_at
# timestamptz default now()) with a random md5 hash and a ~150-byte JSON body.
#
# The deliveries: for each of DELIVERIES/3 users, accounts.connected (with its resource),
# accounts.updated (a sync) and reports.ready, signed with HMAC-SHA512 beforehand, so wrk only
# sends bytes. After each run the service's inbox is counted: every 2xx must be a stored row.
#
# Usage: bench/ingest_wrk.sh [SECONDS] [DELIVERIES]   (defaults 10 and 150000)
# Needs wrk and pgbench (apt-get install wrk postgresql-client). Writes
# bench/results/ingest-wrk-<date>.md (or $BENCH_OUT). BENCH_BUILD: see lib.sh.
source "$(dirname "$0")/lib.sh"
SECS="${1:-10}"
DELIVERIES="${2:-150000}"
OUT="${BENCH_OUT:-bench/results/ingest-wrk-$(date -u +%Y-%m-%d).md}"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }

# Reference: pgbench into raw(...), 64 clients, TCP.
REF_DB="$(fresh_db postgres readiness_bench_raw)"
psql "$REF_DB" -qc "CREATE TABLE raw (id bigserial primary key, hash text unique not null, body jsonb not null, received_at timestamptz default now())"
cat > "$WORK/raw.sql" <<'SQL'
INSERT INTO raw (hash, body) VALUES (md5(random()::text || clock_timestamp()::text), '{"event": "accounts.updated", "name": "readiness-bench", "data": {"account": "0187c66e-e7e5-811c-b006-2232f00f426a", "user": "018051aa-f7a9-a0db-2f38-6cfa325e9d69"}}');
SQL
cpu_run "$WORK/machine-ref" pgbench -n -c 64 -j 2 -T "$SECS" -f "$WORK/raw.sql" "$REF_DB" \
    > "$WORK/pgbench.txt" 2>&1
raw_tps="$(awk '/^tps/ {printf "%.0f", $3}' "$WORK/pgbench.txt")"
raw_p="$(awk '/latency average/ {print $4}' "$WORK/pgbench.txt")"
raw_n="$(awk '/number of transactions actually processed/ {print $NF}' "$WORK/pgbench.txt")"
drop_db postgres readiness_bench_raw

# Pre-signed deliveries, one file per wrk thread.
python3 - "$WORK/deliveries" "$DELIVERIES" "$SECRET" <<'PY'
import hashlib, hmac, json, sys, uuid
path, count, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
files = [open(f"{path}.{i}", "w") for i in (1, 2)]
def line(event, data):
    body = json.dumps({"event": event, "name": "readiness-bench", "data": data}, separators=(",", ":"))
    return hmac.new(secret, body.encode(), hashlib.sha512).hexdigest() + "\t" + body + "\n"
for n in range(count // 3):
    user, account = str(uuid.uuid4()), str(uuid.uuid4())
    resource = {"id": account, "user": user, "status": "connected", "availability": {}}
    synced = f"2026-11-{1 + n % 28:02d}T12:{n % 60:02d}:00Z"
    out = files[n % 2]
    out.write(line("accounts.connected", {"account": account, "user": user, "resource": resource}))
    out.write(line("accounts.updated", {"account": account, "user": user,
                                        "resource": dict(resource, last_synced_at=synced)}))
    out.write(line("reports.ready", {"user": user, "accounts": [{"id": account, "last_synced_at": synced}]}))
PY

run_wrk() {
    local label="$1" cpu0 cpu1
    cpu0="$(cpu_secs "$SERVER_PID")"
    cpu_run "$WORK/machine-$label" wrk -t 2 -c 64 -d "${SECS}s" --timeout 10s \
        -s bench/ingest_wrk.lua "http://$HTTP_ADDR" -- "$WORK/deliveries" > "$WORK/wrk-$label.txt"
    cpu1="$(cpu_secs "$SERVER_PID")"
    echo "$cpu0 $cpu1" > "$WORK/cpu-$label"
}

for backend in postgres sqlite; do
    url="$(fresh_db "$backend" readiness_bench_wrk)"
    start_server "$url"
    run_wrk "$backend"
    stop_server
    if [ "$backend" = postgres ]; then
        psql "${url%%\?*}" -tAc "SELECT count(*) FROM deliveries" > "$WORK/stored-$backend"
        # The rows each table gained and changed (HOT: an update that wrote no index entry),
        # counted by PostgreSQL once the service's connections have closed.
        psql "${url%%\?*}" -tA -F ' ' -c "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd,
            n_tup_del FROM pg_stat_user_tables WHERE n_tup_ins + n_tup_upd + n_tup_del > 0
            ORDER BY relname" > "$WORK/tables-$backend"
    else
        python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM deliveries").fetchone()[0])' \
            "$WORK/readiness_bench_wrk.db" > "$WORK/stored-$backend"
    fi
    drop_db "$backend" readiness_bench_wrk
done

{
    echo "Ingest with wrk (pre-signed distinct deliveries, 64 connections, 2 threads, ${SECS} s), $(machine)."
    echo "Reference: pgbench, 64 clients over TCP, one-row durable INSERT into raw(...): $raw_tps tps (latency average $raw_p ms)."
    echo
    echo "| server | 2xx/s | of pgbench raw | requests | non-2xx | errors | duplicates sent | stored rows | p50 ms | p90 ms | p99 ms | max ms | server CPU % |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for backend in postgres sqlite; do
        python3 - "$WORK/wrk-$backend.txt" "$backend" "$raw_tps" "$(cat "$WORK/stored-$backend")" $(cat "$WORK/cpu-$backend") <<'PY'
import json, sys
text, backend, raw, stored, cpu0, cpu1 = sys.argv[1:]
s = json.loads([l for l in open(text) if l.startswith("{")][-1])
ok = s["requests"] - s["non_2xx"]
rate = ok / s["seconds"]
cpu = (float(cpu1) - float(cpu0)) / s["seconds"] * 100
print(f"| {backend} | {rate:,.0f} | {rate / float(raw):.0%} | {s['requests']:,} | {s['non_2xx']} | {s['socket_errors'] + s['timeouts']} | {s['wrapped']} | {int(stored):,} | {s['p50_ms']} | {s['p90_ms']} | {s['p99_ms']} | {s['max_ms']} | {cpu:.0f} |")
PY
    done
    echo
    echo "Where the machine's CPU went, in microseconds of CPU per stored delivery (per transaction for"
    echo "pgbench): the machine's busy time over the run (all $(nproc) cores, /proc/stat) split into the"
    echo "service's process, the load generator's, and the rest (PostgreSQL's processes, the machine's"
    echo "network interrupts, the machine's other daemons)."
    echo
    echo "| run | per second | machine busy % | stolen % | service µs | load generator µs | PostgreSQL and the rest µs | all µs |"
    echo "|---|---|---|---|---|---|---|---|"
    python3 - "$WORK" "$raw_n" "$raw_tps" "$(nproc)" <<'PY'
import json, sys
work, raw_n, raw_tps, cores = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
def row(label, count, wall, busy, generator, stolen, service):
    us = lambda cpu: f"{cpu / count * 1e6:,.0f}"
    rest = busy - generator - service
    print(f"| {label} | {count / wall:,.0f} | {busy / wall / cores:.0%} | {stolen / wall / cores:.0%} | {us(service) if service else '-'} | {us(generator)} | {us(rest)} | {us(busy)} |")
    return busy / count
busy, own, wall, stolen = map(float, open(f"{work}/machine-ref").read().split())
row("pgbench into `raw`", raw_n, wall, busy, own, stolen, 0.0)
for backend in ("postgres", "sqlite"):
    s = json.loads([l for l in open(f"{work}/wrk-{backend}.txt") if l.startswith("{")][-1])
    busy, own, wall, stolen = map(float, open(f"{work}/machine-{backend}").read().split())
    cpu0, cpu1 = map(float, open(f"{work}/cpu-{backend}").read().split())
    row(f"service on {backend}", s["requests"] - s["non_2xx"], wall, busy, own, stolen, cpu1 - cpu0)
rate = float(raw_tps)
print()
print(f"At 75 % of pgbench's rate ({0.75 * rate:,.0f}/s) the {cores} cores allow at most "
      f"{cores / (0.75 * rate) * 1e6:,.0f} µs of CPU per delivery, every process together.")
PY
    echo
    echo "PostgreSQL's row writes per stored delivery, by table (\`pg_stat_user_tables\`; an update"
    echo "that is not HOT writes an entry in every index of its table):"
    echo
    echo "| table | inserted | updated | of which HOT | deleted |"
    echo "|---|---|---|---|---|"
    stored="$(cat "$WORK/stored-postgres")"
    while read -r table inserted updated hot deleted; do
        awk -v t="$table" -v n="$stored" -v i="$inserted" -v u="$updated" -v h="$hot" -v d="$deleted" \
            'BEGIN {printf "| %s | %.2f | %.2f | %.2f | %.2f |\n", t, i / n, u / n, h / n, d / n}'
    done < "$WORK/tables-postgres"
} | tee "$OUT"
