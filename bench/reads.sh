#!/usr/bin/env bash
# Scenario 5, reads through the read model, on SQLite and PostgreSQL:
#  a. h2load (Debian nghttp2-client) sends one fixed GetUserReadiness frame (one hot user of
#     USERS seeded) at 4 connections x 16 streams, and the same frame to the echo server in the
#     same run; p50/p99 come from h2load's per-request log, gRPC codes from the service's
#     /metrics, and the generator's own CPU is measured (one h2load thread: if it used far less
#     than a core, it was not the bottleneck);
#  b. BIG_USERS seeded users, the default read_cache_users: readiness-bench query, 64 streams of
#     uniformly random users; req/s, latency, hit rate (from /metrics), views cached, RSS; idle
#     RSS before it;
#  c. USERS seeded users each read once (--prefill), then the same random load: views cached
#     and RSS with every user's view held.
#
# Usage: bench/reads.sh [USERS] [BIG_USERS] [SECONDS]   (defaults 100000, 1000000, 10)
# Needs h2load (apt-get install nghttp2-client). Writes bench/results/reads-<date>.md (or $BENCH_OUT).
source "$(dirname "$0")/lib.sh"
USERS="${1:-100000}"
BIG_USERS="${2:-1000000}"
SECS="${3:-10}"
OUT="${BENCH_OUT:-bench/results/reads-$(date -u +%Y-%m-%d).md}"
command -v h2load >/dev/null || { echo "h2load is missing: apt-get install nghttp2-client" >&2; exit 1; }
"$BENCH" frame --user-index 0 --out "$WORK/frame.bin" > "$WORK/frame.json"

# The value of one series in the service's /metrics (0 when absent).
metric() {
    curl -sf "http://$HTTP_ADDR/metrics" | python3 -c '
import sys
name = sys.argv[1]
total = 0.0
for line in sys.stdin:
    if line.startswith(name) and (len(line) == len(name) or line[len(name)] in " {"):
        labels_ok = all(part in line for part in sys.argv[2:])
        if labels_ok:
            total += float(line.rsplit(" ", 1)[1])
print(f"{total:.0f}")' "$@"
}

# Row: server|rate|ok|non-2xx|p50|p99|max|generator CPU % of one core|server CPU %
h2load_run() {
    local label="$1" cpu0 cpu1
    h2load -c 4 -m 16 -t 1 -D 2 -d "$WORK/frame.bin" \
        -H 'content-type: application/grpc' -H 'te: trailers' \
        "http://$GRPC_ADDR/readiness.v1.ReadinessService/GetUserReadiness" > /dev/null  # warm-up
    cpu0="$(cpu_secs "$SERVER_PID")"
    python3 - "$WORK/h2load-$label.txt" "$WORK/h2load-$label.cpu" -- h2load -c 4 -m 16 -t 1 -D "$SECS" \
        --log-file "$WORK/h2load-$label.log" -d "$WORK/frame.bin" \
        -H 'content-type: application/grpc' -H 'te: trailers' \
        "http://$GRPC_ADDR/readiness.v1.ReadinessService/GetUserReadiness" <<'PY'
import resource, subprocess, sys
out, cpu = sys.argv[1], sys.argv[2]
with open(out, "w") as f:
    subprocess.run(sys.argv[4:], stdout=f, check=True)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(cpu, "w").write(f"{r.ru_utime + r.ru_stime:.2f}")
PY
    cpu1="$(cpu_secs "$SERVER_PID")"
    python3 - "$label" "$WORK/h2load-$label.txt" "$WORK/h2load-$label.log" "$(cat "$WORK/h2load-$label.cpu")" "$cpu0" "$cpu1" "$SECS" >> "$WORK/h2rows" <<'PY'
import re, sys
label, text, log, gen, cpu0, cpu1, secs = sys.argv[1:]
t = open(text).read()
rate = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", t).group(1))
codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", t)
ok, other = int(codes.group(1)), sum(int(codes.group(i)) for i in (2, 3, 4))
d = sorted(int(line.split()[2]) for line in open(log) if line.strip())
q = lambda p: d[min(len(d) - 1, int(p * len(d)))] / 1000
server = (float(cpu1) - float(cpu0)) / float(secs) * 100
print(f"{label}|{rate:.0f}|{ok}|{other}|{q(0.5):.2f}|{q(0.99):.2f}|{d[-1] / 1000:.2f}|{float(gen) / float(secs) * 100:.0f}|{server:.0f}")
PY
}

# Row: backend|users|cache|streams|req/s|p50|p99|hits|misses|hit rate|views cached|idle RSS|RSS after
query_run() {
    local backend="$1" users="$2" prefill="$3" idle before_hits before_misses
    idle="$(rss "$SERVER_PID")"
    before_hits="$(metric readiness_read_cache_lookups_total 'cache="users"' 'result="hit"')"
    before_misses="$(metric readiness_read_cache_lookups_total 'cache="users"' 'result="miss"')"
    "$BENCH" query --target "http://$GRPC_ADDR" --users "$users" --concurrency 64 --connections 4 \
        --seconds "$SECS" $prefill > "$WORK/query.json"
    python3 - "$WORK/query.json" "$backend" "$users" "$prefill" "$idle" "$(rss "$SERVER_PID")" \
        "$(( $(metric readiness_read_cache_lookups_total 'cache="users"' 'result="hit"') - before_hits ))" \
        "$(( $(metric readiness_read_cache_lookups_total 'cache="users"' 'result="miss"') - before_misses ))" \
        "$(metric readiness_read_cache_entries 'cache="users"')" >> "$WORK/qrows" <<'PY'
import json, sys
path, backend, users, prefill, idle, after, hits, misses, cached = sys.argv[1:]
s = json.load(open(path))
lat = s["latency_ms"]
hits, misses = int(hits), int(misses)
errors = sum(v for k, v in s["codes"].items() if k != "Ok")
mode = "each user read once, then random" if prefill else "uniform random"
print(f"| {backend} | {int(users):,} | {mode} | {s['ok_per_second']:.0f} | {errors} | {lat['p50']} | {lat['p99']} | {hits:,} | {misses:,} | {hits / max(1, hits + misses):.1%} | {int(cached):,} | {idle} | {after} |")
PY
}

for backend in sqlite postgres; do
    url="$(fresh_db "$backend" readiness_bench_reads)"
    "$SEEDER" seed --database-url "$url" --to "$USERS" > /dev/null
    start_server "$url"
    query_run "$backend" "$USERS" --prefill
    h2load_run "$backend"
    total="$(metric readiness_grpc_requests_total 'GetUserReadiness')"
    ok="$(metric readiness_grpc_requests_total 'GetUserReadiness' 'code="Ok"')"
    echo "$backend: the service answered $total GetUserReadiness requests in all (prefill, random load, h2load), $ok of them with code Ok" >> "$WORK/codes"
    stop_server
    "$SEEDER" seed --database-url "$url" --from "$USERS" --to "$BIG_USERS" > /dev/null
    start_server "$url"
    query_run "$backend" "$BIG_USERS" ""
    stop_server
    drop_db "$backend" readiness_bench_reads
done
start_echo
h2load_run echo
stop_server

{
    echo "Reads (GetUserReadiness through the read model), $(machine); load generators on the same machine."
    echo
    echo "h2load, one fixed request frame (seeded user 0 of $USERS), 4 connections x 16 streams, $SECS s after a 2 s warm-up:"
    echo
    echo "| server | req/s | of echo | 2xx | other | p50 ms | p99 ms | max ms | h2load CPU % of one core | server CPU % |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    echo_rate="$(awk -F'|' '$1=="echo" {print $2}' "$WORK/h2rows")"
    while IFS='|' read -r label rate ok other p50 p99 max gen server; do
        echo "| $label | $rate | $(python3 -c "print(f'{$rate/$echo_rate:.0%}')") | $ok | $other | $p50 | $p99 | $max | $gen | $server |"
    done < "$WORK/h2rows"
    echo
    sed 's/^/- /' "$WORK/codes"
    echo
    echo "readiness-bench query, 64 streams over 4 connections, $SECS s after a 2 s warm-up, default read_cache_users (100,000):"
    echo
    echo "| backend | users | users read | req/s | errors | p50 ms | p99 ms | hits | misses | hit rate | views cached | RSS before MiB | RSS after MiB |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    cat "$WORK/qrows"
} | tee "$OUT"
