#!/usr/bin/env bash
# Builds the service's container image as users get it (the Dockerfile's runtime stage, here fed a
# binary built on the host, since image registries are unreachable) on a Debian base made with
# debootstrap, and checks it: non-root, HEALTHCHECK, a signed webhook read back over gRPC, SQLite
# data surviving a new container on the same named volume, and deploy/compose.yaml (two replicas
# on PostgreSQL) under podman-compose: a webhook to one replica reaches a stream on the other.
# Called by .ci/run; runs alone too (as root, with apt reachable). Removes every container, volume
# and network it made; keeps the base image (and a tarball of it) and the PostgreSQL image as caches.
#
# Environment: READINESS_CI_CONTAINER_PROFILE=release (default; the binary users get) or debug
# (quicker, reuses the test build; the image is then much larger), READINESS_CI_CACHE (default
# ~/.cache/readiness-ci), READINESS_CI_REFRESH_BASE=1 to rebuild the base image, GRPCURL.
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${READINESS_CI_CONTAINER_PROFILE:-release}"
cache="${READINESS_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/readiness-ci}"
grpcurl="${GRPCURL:-grpcurl}"
base=localhost/debian:bookworm-slim
image=localhost/readiness:ci
pg_image=localhost/readiness-ci-postgres:latest
run="readiness-ci-$$"
work="$(mktemp -d)"

started=$SECONDS
phase_started=$SECONDS
timings=()
phase() {
    if [ -n "${phase_name:-}" ]; then
        timings+=("$(printf '%-44s %4d s' "$phase_name" $((SECONDS - phase_started)))")
    fi
    phase_name="$*"
    phase_started=$SECONDS
    printf -- '-- %s\n' "$*"
}
fail() {
    echo "FAILED: $*" >&2
    exit 1
}

# podman's default limits (nofile and nproc 1048576) are above what root may set on machines
# without CAP_SYS_RESOURCE (runc: "error setting rlimit type 7"), and its default runtime may be
# crun, which fails the same way: use runc and limits this machine allows, for every podman call
# (podman-compose's included).
mkdir -p "$work/conf"
nofile="$(ulimit -Hn)"
if [ "$nofile" = unlimited ] || [ "$nofile" -gt 65536 ]; then nofile=65536; fi
cat > "$work/conf/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=4096:4096"]
[engine]
runtime = "runc"
[network]
network_backend = "netavark"
EOF
export CONTAINERS_CONF="$work/conf/containers.conf"

compose_project="$run"
compose() {
    podman-compose --no-ansi -p "$compose_project" \
        -f deploy/compose.yaml -f deploy/compose.ci.yaml "$@"
}

# Without systemd, podman logs an error whenever it cannot add or remove a health-check timer;
# the checks themselves work (`podman healthcheck run`). Those lines are dropped.
pm() { podman "$@" 2> >(grep -v 'unable to get systemd connection' >&2); }

remove_everything() { # every container, volume and network of this run, and the image
    podman ps -a -q --filter "name=^$run" | xargs -r podman rm -f -v -t 0 >/dev/null 2>&1
    podman volume ls -q --filter "name=^$run" | xargs -r podman volume rm -f >/dev/null 2>&1
    podman network ls -q --filter "name=^$run" | xargs -r podman network rm -f >/dev/null 2>&1
    podman images -a -q --filter "label=io.readiness.ci=$run" | xargs -r podman image rm -f >/dev/null 2>&1
}
on_exit() {
    local status=$?
    set +e
    if [ -n "${stream_pid:-}" ]; then kill "$stream_pid" 2>/dev/null; fi
    if [ "$status" -ne 0 ]; then
        if [ -s "$work/compose-up.log" ]; then
            echo "--- podman-compose up"
            cat "$work/compose-up.log"
        fi
        for c in $(podman ps -a --filter "name=^$run" --format '{{.Names}}'); do
            echo "--- $c, last 30 lines of its log"
            podman logs --tail 30 "$c" 2>&1
            podman inspect -f '--- its state: {{.State.Status}}, exit code {{.State.ExitCode}}, restarts {{.RestartCount}}, started {{.State.StartedAt}}, finished {{.State.FinishedAt}} {{.State.Error}}' "$c" 2>&1
        done
        remove_everything
    fi
    rm -rf "$work"
    exit "$status"
}
trap on_exit EXIT

free_ports() { # N -> N ports, free now on every address, below the ephemeral range
    # Ports that bind(port 0) hands out lie in the kernel's ephemeral range, where any outgoing
    # connection made before the container binds them may take them (the compose step's replica
    # `a` once never started, with an empty log; cause not caught). Ports below that range are
    # never given to outgoing connections: chosen at random there, each is checked free on
    # 0.0.0.0 (as podman publishes them) and held until all N are found, so they are distinct.
    python3 - "$1" <<'EOF'
import random, socket, sys
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
held = []
while len(held) < int(sys.argv[1]):
    s = socket.socket()
    try:
        s.bind(("0.0.0.0", random.randrange(1024, low)))
    except OSError:
        s.close()
        continue
    held.append(s)
print(" ".join(str(s.getsockname()[1]) for s in held))
EOF
}

wait_healthy() { # container: runs the image's HEALTHCHECK until it passes (60 s at most)
    for _ in $(seq 1 120); do
        if podman healthcheck run "$1" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    podman healthcheck run "$1" || true
    fail "$1: the HEALTHCHECK did not pass within 60 s"
}

post_webhook() { # http-port file -> checks a 200 "applied"
    local signature answer
    signature="$("$binary" sign --secret "$secret" "$2")"
    answer="$(curl -sS -w ' %{http_code}' "http://127.0.0.1:$1/webhooks/argyle" \
        -H 'Content-Type: application/json' -H "X-Argyle-Signature: $signature" \
        --data-binary @"$2")"
    echo "   POST $2 -> $answer"
    case "$answer" in
        *'"status":"applied"'*' 200') ;;
        *) fail "webhook $2 was not applied" ;;
    esac
}

readiness_of() { # grpc-port -> GetUserReadiness of applicant-42 (JSON)
    "$grpcurl" -plaintext -max-time 10 -d '{"external_id": "applicant-42"}' \
        "127.0.0.1:$1" readiness.v1.ReadinessService/GetUserReadiness
}

phase "tools: podman, runc, debootstrap, podman-compose"
# Without recommends, apt picks CNI networking, whose containers cannot resolve each other by
# name (compose's `postgres`): netavark with aardvark-dns does, and netavark needs iptables.
# Rootless helpers (uidmap, slirp4netns, fuse-overlayfs) are not needed as root.
packages=(podman runc netavark aardvark-dns iptables debootstrap podman-compose curl)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f '${Status}\n' "$package" 2>/dev/null | grep -q '^install ok installed' \
        || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]}"
    apt-get update -qq -o DPkg::Lock::Timeout=300
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
        --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
podman --version
"$grpcurl" -version 2>&1
volumes_before="$(podman volume ls -q | sort)"

phase "binary ($profile)"
if [ "$profile" = release ]; then
    cargo build --locked --release --bin readiness
else
    cargo build --locked --bin readiness
fi
binary="${CARGO_TARGET_DIR:-target}/$profile/readiness"

phase "base image $base"
if [ "${READINESS_CI_REFRESH_BASE:-0}" = 1 ]; then
    podman image rm -f "$base" >/dev/null 2>&1 || true
    rm -f "$cache/debian-bookworm-minbase.tar"
fi
if podman image exists "$base"; then
    echo "reusing $base"
else
    if [ ! -s "$cache/debian-bookworm-minbase.tar" ]; then
        # The Debian mirror apt uses here (registries are unreachable, the mirror is not).
        mirror="$(python3 - <<'EOF'
import glob, re
codename = dict(l.strip().split("=", 1) for l in open("/etc/os-release") if "=" in l).get(
    "VERSION_CODENAME", "").strip('"')
found = []
for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        words = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
        if len(words) >= 3 and words[0] == "deb" and words[2] == codename:
            found.append(words[1])
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in open(path).read().split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith(("#", " ")):
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.split()
        if ("deb" in fields.get("types", []) and codename in fields.get("suites", [])
                and fields.get("enabled", ["yes"])[0] != "no"):
            found.extend(fields.get("uris", []))
print(found[0] if found else "http://deb.debian.org/debian")
EOF
)"
        echo "debootstrap bookworm from $mirror"
        rootfs="$work/rootfs"
        debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$mirror" \
            > "$work/debootstrap.log" 2>&1 || { tail -n 20 "$work/debootstrap.log"; fail "debootstrap"; }
        # Slim it the way Debian's -slim images are: no documentation (copyrights stay), manuals,
        # locales or package lists, and dpkg told to leave them out of later installs too.
        cat > "$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
        find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
        find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
        rm -rf "$rootfs"/usr/share/{man,groff,info,lintian,linda,locale}/* \
            "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
            "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log "$rootfs"/dev/*
        mkdir -p "$cache"
        tar -C "$rootfs" --numeric-owner -cf "$cache/debian-bookworm-minbase.tar.part" .
        mv "$cache/debian-bookworm-minbase.tar.part" "$cache/debian-bookworm-minbase.tar"
        rm -rf "$rootfs"
    else
        echo "importing the cached $cache/debian-bookworm-minbase.tar"
    fi
    podman import --quiet \
        --change 'ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD=["bash"]' \
        "$cache/debian-bookworm-minbase.tar" "$base" >/dev/null
fi
podman image ls "$base"

phase "image $image (Dockerfile, binary from the host)"
# The binary goes in as an image holding /out/readiness, as the `build` stage leaves it; the
# label marks it and every image the build makes (one per step) for removal.
mkdir -p "$work/binary/out" "$work/context"
cp "$binary" "$work/binary/out/readiness"
tar -C "$work/binary" --numeric-owner -c out \
    | podman import --quiet --change "LABEL=io.readiness.ci=$run" - "localhost/readiness-ci-binary:$run" >/dev/null
podman build --quiet --label "io.readiness.ci=$run" --format docker --network host \
    --build-arg BINARY_FROM="localhost/readiness-ci-binary:$run" \
    -f Dockerfile -t "$image" "$work/context" >/dev/null
podman image ls "$image"
image_size="$(podman image inspect -f '{{.Size}}' "$image")"

phase "one container, SQLite on a named volume"
secret="ci-$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')"
cat > "$work/connected.json" <<'EOF'
{"event":"accounts.connected","name":"readiness-ci","data":{"account":"0187c66e-e7e5-811c-b006-2232f00f426a","user":"018051aa-f7a9-a0db-2f38-6cfa325e9d69"}}
EOF
cat > "$work/ready.json" <<'EOF'
{"event":"reports.ready","name":"readiness-ci","data":{"user":"018051aa-f7a9-a0db-2f38-6cfa325e9d69","external_id":"applicant-42","accounts":[{"id":"0187c66e-e7e5-811c-b006-2232f00f426a","last_synced_at":"2024-01-08T12:58:06.023659Z"}]}}
EOF
cat > "$work/generated.json" <<'EOF'
{"event":"reports.generated","name":"readiness-ci","data":{"user":"018051aa-f7a9-a0db-2f38-6cfa325e9d69","type":"voie","report_id":"43a2c6c3-1e63-91e5-88e3-f9ab2dcc489b"}}
EOF
volume="$run-data"
podman volume create "$volume" >/dev/null
start_single() { # name -> runs the image on free ports with the volume; sets http_port grpc_port
    read -r http_port grpc_port <<<"$(free_ports 2)"
    pm run -d --name "$1" --network host -v "$volume:/var/lib/readiness" \
        -e READINESS_HTTP_ADDR="127.0.0.1:$http_port" \
        -e READINESS_GRPC_ADDR="127.0.0.1:$grpc_port" \
        -e READINESS_ARGYLE_SECRETS="$secret" \
        "$image" >/dev/null
    echo "   $1: HTTP 127.0.0.1:$http_port, gRPC 127.0.0.1:$grpc_port"
}
start_single "$run-1"
wait_healthy "$run-1"
echo "   HEALTHCHECK passes ($(podman inspect -f '{{json .Config.Healthcheck.Test}}' "$run-1"))"

pid="$(podman inspect -f '{{.State.Pid}}' "$run-1")"
uid="$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")"
[ "$uid" = 10001 ] || fail "the service runs as uid $uid, not 10001 (the Dockerfile's readiness user)"
echo "   the service process runs as uid $uid ($(podman exec "$run-1" id -un))"

post_webhook "$http_port" "$work/connected.json"
post_webhook "$http_port" "$work/ready.json"
before="$(readiness_of "$grpc_port" 2>&1)" || fail "GetUserReadiness: $before"
grep -q '"state": "READINESS_STATE_READY"' <<<"$before" || fail "not READY over gRPC: $before"
echo "   GetUserReadiness over gRPC: READINESS_STATE_READY"

pm stop -t 20 "$run-1" >/dev/null
exit_code="$(podman inspect -f '{{.State.ExitCode}}' "$run-1")"
[ "$exit_code" = 0 ] || fail "SIGTERM: the service exited $exit_code, not 0"
pm rm "$run-1" >/dev/null
echo "   stopped by SIGTERM (exit 0) and removed; a new container on the same volume:"
start_single "$run-2"
wait_healthy "$run-2"
after="$(readiness_of "$grpc_port" 2>&1)" || fail "after the restart, GetUserReadiness: $after"
[ "$after" = "$before" ] || fail "after the restart the answer changed: $after (was $before)"
echo "   the same answer after the restart (data survived in volume $volume)"
pm stop -t 20 "$run-2" >/dev/null

phase "PostgreSQL image $pg_image (Debian's postgresql)"
previous="$(podman image inspect -f '{{.Id}}' "$pg_image" 2>/dev/null || true)"
podman build --quiet --format docker --network host -t "$pg_image" .ci/postgres >/dev/null
if [ -n "$previous" ] && [ "$previous" != "$(podman image inspect -f '{{.Id}}' "$pg_image")" ]; then
    podman image rm -f "$previous" >/dev/null 2>&1 || true # built on an older base
fi
podman image ls "$pg_image"

phase "compose: two replicas on PostgreSQL"
read -r HTTP_PORT_A GRPC_PORT_A HTTP_PORT_B GRPC_PORT_B <<<"$(free_ports 4)"
export HTTP_PORT_A GRPC_PORT_A HTTP_PORT_B GRPC_PORT_B
export READINESS_IMAGE="$image" POSTGRES_IMAGE="$pg_image"
export POSTGRES_PASSWORD="pg-$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')"
export READINESS_ARGYLE_SECRETS="$secret"
# podman-compose 1.0.3 ignores `condition: service_healthy` and starts everything at once, as
# the README says: the replicas come up while PostgreSQL still initialises its volume, and wait
# for it by themselves (database_startup_wait_secs).
compose up -d --no-build > "$work/compose-up.log" 2>&1 || { cat "$work/compose-up.log"; fail "compose up"; }
wait_healthy "${compose_project}_postgres_1"
replica_a="${compose_project}_readiness-a_1"
replica_b="${compose_project}_readiness-b_1"
wait_healthy "$replica_a"
wait_healthy "$replica_b"
podman ps --filter "name=^$compose_project" --format '   {{.Names}}  {{.Status}}  {{.Ports}}'
for replica in "$replica_a" "$replica_b"; do
    echo "   $replica tried the database again $(podman logs "$replica" 2>&1 \
        | grep -c 'the database cannot be reached yet') times before it was up"
done

# A stream on replica B, opened at "now"; once it has caught up, a webhook to replica A.
"$grpcurl" -plaintext -max-time 60 -d '{"start": "START_POSITION_NOW"}' \
    "127.0.0.1:$GRPC_PORT_B" readiness.v1.ReportService/StreamReportEvents > "$work/stream.out" 2>&1 &
stream_pid=$!
for _ in $(seq 1 300); do
    grep -q caughtUp "$work/stream.out" && break
    sleep 0.1
done
grep -q caughtUp "$work/stream.out" || fail "the stream on replica B did not catch up: $(cat "$work/stream.out")"
post_webhook "$HTTP_PORT_A" "$work/connected.json"
post_webhook "$HTTP_PORT_A" "$work/generated.json"
for _ in $(seq 1 300); do
    grep -q reportGenerated "$work/stream.out" && break
    sleep 0.1
done
grep -q '"argyleReportId": "43a2c6c3-1e63-91e5-88e3-f9ab2dcc489b"' "$work/stream.out" \
    || fail "the report did not reach the stream on replica B: $(cat "$work/stream.out")"
kill "$stream_pid" 2>/dev/null || true
wait "$stream_pid" 2>/dev/null || true
stream_pid=
echo "   a webhook to replica A reached a StreamReportEvents stream on replica B"
# podman-compose 1.0.3's `down` leaves the replicas' anonymous volumes (the image's VOLUME):
# remove the containers with their volumes first; `down -v` then removes the network and pgdata.
podman ps -a -q --filter "label=io.podman.compose.project=$compose_project" \
    | xargs -r podman rm -f -v -t 10 >/dev/null 2>&1
compose down -v > "$work/compose-down.log" 2>&1 || { cat "$work/compose-down.log"; fail "compose down"; }

phase "clean up"
remove_everything
left="$(podman ps -a -q --filter "name=^$run"; podman network ls -q --filter "name=^$run"
        podman images -a -q --filter "label=io.readiness.ci=$run"
        comm -13 <(echo "$volumes_before") <(podman volume ls -q | sort))"
[ -z "$left" ] || fail "left behind: $left"
echo "   no container, volume or network of this run is left; kept: $base, $pg_image"

phase "done"
echo
echo "image $image: $((image_size / 1000000)) MB ($image_size bytes), binary: $profile"
printf '%s\n' "${timings[@]}"
printf '%-44s %4d s\n' "container step in total" $((SECONDS - started))
