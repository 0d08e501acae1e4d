#!/usr/bin/env bash
# Where the server's time goes: samples its CPU with `perf` (software clock; Debian's linux-perf)
# under load, then prints the share of samples per component (grouped by crate / library) and
# the top functions. WORKLOAD `ingest`: `readiness simulate` sends USERS users' traffic with 64
# senders; `query`: GetUserReadiness from 64 streams for 10 s against USERS seeded users.
#
# Usage: bench/profile.sh [sqlite|postgres] [ingest|query] [USERS]   (defaults sqlite ingest 2000)
source "$(dirname "$0")/lib.sh"
BACKEND="${1:-sqlite}"
WORKLOAD="${2:-ingest}"
USERS="${3:-2000}"
command -v perf >/dev/null || { echo "perf is needed: apt-get install linux-perf" >&2; exit 1; }
url="$(fresh_db "$BACKEND" readiness_bench_profile)"
[ "$WORKLOAD" = query ] && "$SEEDER" seed --database-url "$url" --to "$USERS" > /dev/null
start_server "$url"
perf record -q -F 999 -e cpu-clock -p "$SERVER_PID" -o "$WORK/perf.data" 2>/dev/null &
PERF=$!
sleep 0.5
if [ "$WORKLOAD" = query ]; then
    "$BENCH" query --target "http://$GRPC_ADDR" --users "$USERS" --concurrency 64 --seconds 10 \
        > "$WORK/load.json"
    rate="$(field "$WORK/load.json" ok_per_second) GetUserReadiness/s"
else
    "$BIN" simulate --target "http://$HTTP_ADDR" --secret "$SECRET" --users "$USERS" \
        --concurrency 64 > "$WORK/load.json"
    rate="$(field "$WORK/load.json" acknowledged_per_second) acks/s"
fi
kill -INT "$PERF"; wait "$PERF" || true
stop_server
drop_db "$BACKEND" readiness_bench_profile
echo "$BACKEND $WORKLOAD: $rate"
perf report -i "$WORK/perf.data" --stdio --no-children --sort dso,symbol 2>/dev/null \
    | python3 -c '
import re, sys, collections
rows = []
for line in sys.stdin:
    m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[.\]\s+(.*)", line)
    if m:
        rows.append((float(m.group(1)), m.group(2), m.group(3).strip()))
def component(dso, sym):
    if dso != "readiness":
        return dso
    if sym.startswith(("sqlite3", "pcache", "btree", "vdbe")) or re.match(r"^[a-z][a-zA-Z0-9]*$", sym):
        return "SQLite (bundled C)"
    m = re.match(r"(?:<)?(?:_<)?([a-z_][a-z0-9_]*)::", sym)
    return m.group(1) if m else "other"
groups = collections.Counter()
for pct, dso, sym in rows:
    groups[component(dso, sym)] += pct
print("share of server CPU samples by component:")
for name, pct in groups.most_common(20):
    print(f"  {pct:5.1f}%  {name}")
print("top functions:")
for pct, dso, sym in sorted(rows, reverse=True)[:25]:
    print(f"  {pct:5.1f}%  {dso}  {sym[:110]}")
'
