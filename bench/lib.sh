# Shared by the bench/*.sh scripts (sourced, not run). Everything runs on loopback on this
# machine: server, database and load generator share its cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PG="postgres://postgres@127.0.0.1:5432"
PG_SSLMODE="${BENCH_PG_SSLMODE:-disable}"
SECRET="bench-secret"
BIN=target/release/readiness
BENCH=target/release/readiness-bench
cargo build --release --quiet --bins
# BENCH_BUILD=DIR measures another build of the service (for example an earlier commit built in a
# git worktree) under this tree's load generators, references and echo server: DIR's `readiness`
# serves and DIR's `readiness-bench seed` fills its database (each build seeds its own schema).
SERVICE="${BENCH_BUILD:-target/release}/readiness"
SEEDER="${BENCH_BUILD:-target/release}/readiness-bench"
mkdir -p bench/results
WORK="$(mktemp -d)"
trap 'jobs -p | xargs -r kill 2>/dev/null || true; rm -rf "$WORK"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# CPU seconds (user+system) and peak / current RSS (MiB) of a process, from /proc.
cpu_secs() { awk '{printf "%.2f", ($14+$15)/100}' "/proc/$1/stat"; }
peak_rss() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
rss() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }

# Runs a command (its output as the caller redirects it) and writes to FILE four numbers: the
# CPU seconds the whole machine was busy during the run (every core, from /proc/stat: user, nice,
# system, irq and softirq), the CPU seconds of the command itself (user+system, with its
# children), the run's wall-clock seconds, and the CPU seconds the hypervisor took from this
# machine's cores (steal: a virtual machine's cores are not always its own, which makes runs
# differ).
cpu_run() {
    local out="$1"; shift
    python3 - "$out" "$@" <<'PY'
import os, resource, subprocess, sys, time
def busy():
    # user, nice, system, idle, iowait, irq, softirq, steal: busy is all but idle, iowait, steal.
    fields = open("/proc/stat").readline().split()[1:9]
    user, nice, system, _, _, irq, softirq, steal = map(int, fields)
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick
(before, stolen0), start = busy(), time.monotonic()
status = subprocess.run(sys.argv[2:]).returncode
(after, stolen1), wall = busy(), time.monotonic() - start
own = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(
    f"{after - before:.2f} {own.ru_utime + own.ru_stime:.2f} {wall:.2f} {stolen1 - stolen0:.2f}\n")
sys.exit(status)
PY
}

machine() {
    echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), $(psql -V | awk '{print "PostgreSQL " $3}')"
}

# A fresh database URL for BACKEND (sqlite|postgres) named NAME.
fresh_db() {
    local backend="$1" name="$2"
    if [ "$backend" = sqlite ]; then
        rm -f "$WORK/$name.db"*
        echo "sqlite://$WORK/$name.db?mode=rwc"
    else
        psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $name" -qc "CREATE DATABASE $name" >/dev/null
        # Plain TCP on loopback by default, for the service and pgbench alike: sqlx (0.9) does
        # not set TCP_NODELAY, and over TLS its round trips stall on delayed ACKs (README,
        # Configuration). BENCH_PG_SSLMODE=prefer measures the TLS case.
        echo "$PG/$name?sslmode=$PG_SSLMODE"
    fi
}

drop_db() {
    if [ "$1" = postgres ]; then psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $2" >/dev/null; fi
}

# Starts the service on URL with fresh ports; sets SERVER_PID, HTTP_ADDR, GRPC_ADDR. The pool has
# 32 connections unless BENCH_DB_CONNECTIONS says otherwise (the service's default is 10).
start_server() {
    local url="$1"; shift
    HTTP_ADDR="127.0.0.1:$(free_port)"; GRPC_ADDR="127.0.0.1:$(free_port)"
    READINESS_DATABASE_URL="$url" READINESS_ARGYLE_SECRETS="$SECRET" RUST_LOG=warn \
        READINESS_DATABASE_MAX_CONNECTIONS="${BENCH_DB_CONNECTIONS:-32}" \
        "$SERVICE" serve --http-addr "$HTTP_ADDR" --grpc-addr "$GRPC_ADDR" "$@" &
    SERVER_PID=$!
    wait_ready
}

# Starts the echo reference server; sets SERVER_PID, HTTP_ADDR, GRPC_ADDR.
start_echo() {
    HTTP_ADDR="127.0.0.1:$(free_port)"; GRPC_ADDR="127.0.0.1:$(free_port)"
    "$BENCH" echo --http-addr "$HTTP_ADDR" --grpc-addr "$GRPC_ADDR" 2>/dev/null &
    SERVER_PID=$!
    wait_ready
}

wait_ready() {
    for _ in $(seq 1 300); do
        "$SERVICE" healthcheck --http-addr "$HTTP_ADDR" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "server on $HTTP_ADDR did not become ready" >&2; return 1
}

stop_server() { kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || true; }

# Reads a JSON field path (a.b.c) from a file.
field() { python3 -c "import json,sys; v=json.load(open(sys.argv[1])); [v:=v[k] for k in sys.argv[2].split('.')]; print(v)" "$1" "$2"; }
