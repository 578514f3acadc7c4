#!/usr/bin/env bash
# Bring up the services ds01q's tests need on a Debian CI machine (run as root).
#
#   scripts/ci-services.sh          Docker engine + the local images ds01q/busybox:test and
#                                   ds01q/debian:test (debootstrap minbase, dynamically linked)
#   scripts/ci-services.sh --all    the above, plus redis-server (127.0.0.1:6379) and PostgreSQL,
#                                   and the images ds01q/redis:test and ds01q/postgres:test that the
#                                   multi-node tests start with testcontainers (debootstrap minbase
#                                   from apt's own Debian mirror + the server package, docker import)
#
# Idempotent: installs only missing packages, starts only what is not running and
# builds the image only when it does not exist. No systemd and no registry needed.
set -euo pipefail

IMAGE="ds01q/busybox:test"
DEBIAN_IMAGE="ds01q/debian:test"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
DOCKERD_TIMEOUT="${DOCKERD_TIMEOUT:-60}"
ALL=0

for arg in "$@"; do
    case "$arg" in
        --all) ALL=1 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "ci-services.sh: unknown option '$arg' (allowed: --all)" >&2; exit 2 ;;
    esac
done

log() { echo "ci-services: $*" >&2; }
die() { echo "ci-services: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"

# ---------------------------------------------------------------- packages
missing=()
command -v dockerd >/dev/null 2>&1 && command -v docker >/dev/null 2>&1 || missing+=(docker.io)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
if [ "$ALL" -eq 1 ]; then
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# ---------------------------------------------------------------- dockerd
cgroup_driver() {
    # systemd's driver only works when systemd is PID 1; otherwise cgroupfs (v1 or v2).
    if [ -d /run/systemd/system ]; then echo systemd; else echo cgroupfs; fi
}

wait_docker() {
    local deadline=$((SECONDS + DOCKERD_TIMEOUT))
    while [ "$SECONDS" -lt "$deadline" ]; do
        docker info >/dev/null 2>&1 && return 0
        kill -0 "$1" 2>/dev/null || return 1
        sleep 1
    done
    return 1
}

start_dockerd() {
    local args=("$@")
    if ! grep -qs 'native.cgroupdriver' /etc/docker/daemon.json; then
        args+=(--exec-opt "native.cgroupdriver=$(cgroup_driver)")
    fi
    log "starting dockerd ${args[*]} (log: $DOCKERD_LOG)"
    nohup dockerd "${args[@]}" >>"$DOCKERD_LOG" 2>&1 </dev/null &
    DOCKERD_PID=$!
    wait_docker "$DOCKERD_PID"
}

# the engine behind /var/run/docker.sock, by its default pid file: a test's private engine (own socket,
# own pid file) is another dockerd and must not pass for it
main_dockerd() {
    local pid
    pid=$(cat /var/run/docker.pid 2>/dev/null) && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
        && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] && echo "$pid"
}

if ! docker info >/dev/null 2>&1; then
    if MAIN_PID=$(main_dockerd); then
        log "dockerd is running but not answering yet; waiting"
        wait_docker "$MAIN_PID" || die "dockerd does not answer; see $DOCKERD_LOG"
    elif ! start_dockerd; then
        kill "$DOCKERD_PID" 2>/dev/null || true
        wait "$DOCKERD_PID" 2>/dev/null || true
        rm -f /var/run/docker.pid
        # Kernels without the NAT tables (some VMs) make the bridge setup fail.
        log "dockerd did not come up; retrying with --iptables=false"
        start_dockerd --iptables=false || die "dockerd did not start in ${DOCKERD_TIMEOUT}s; see $DOCKERD_LOG"
    fi
fi
log "docker engine up: cgroup driver $(docker info --format '{{.CgroupDriver}}'), cgroup v$(docker info --format '{{.CgroupVersion}}')"

# ---------------------------------------------------------------- test image
build_image() {
    local busybox rootfs applet
    busybox=$(dpkg -L busybox-static 2>/dev/null | grep -m1 '/bin/busybox$' || true)
    [ -n "$busybox" ] && [ -x "$busybox" ] || die "static busybox not found (package busybox-static)"
    rootfs=$(mktemp -d /tmp/ds01q-rootfs.XXXXXX)
    mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,home,proc,sys,dev,var/tmp}
    chmod 1777 "$rootfs/tmp" "$rootfs/var/tmp"
    cp "$busybox" "$rootfs/bin/busybox"
    # One symlink per applet at its usual path (sh, sleep, cat, id, dd, head, yes, stty, env ...).
    while read -r applet; do
        [ -n "$applet" ] && [ ! -e "$rootfs/$applet" ] && ln -s /bin/busybox "$rootfs/$applet"
    done < <("$busybox" --list-full)
    [ -e "$rootfs/bin/sh" ] || ln -s /bin/busybox "$rootfs/bin/sh"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
    tar -C "$rootfs" --numeric-owner -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["sh"]' - "$IMAGE" >/dev/null
    rm -rf "$rootfs"
}

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "image $IMAGE exists"
else
    log "building $IMAGE from busybox-static"
    build_image
fi
[ "$(docker run --rm "$IMAGE" sh -c 'echo ok')" = "ok" ] || die "smoke test 'docker run --rm $IMAGE' failed"

# ---------------------------------------------------------------- service images (testcontainers)
# The Debian mirror and suite apt already uses (deb822 .sources or a one-line sources.list).
apt_mirror() {
    local uri suite
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    suite=$(awk '/^Suites:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    if [ -z "$uri" ]; then
        read -r uri suite < <(awk '$1 == "deb" && $2 !~ /^\[/ {print $2, $3; exit}' /etc/apt/sources.list 2>/dev/null) || true
    fi
    [ -n "$uri" ] && [ -n "$suite" ] || die "cannot find apt's Debian mirror in /etc/apt/sources.list{,.d/debian.sources}"
    echo "$uri $suite"
}

# build_service_image TAG [PACKAGE ENTRYPOINT-SCRIPT]: debootstrap minbase (+ PACKAGE), then docker import.
# Without a package it is the plain dynamically linked Debian the security tests use (CMD sh).
build_service_image() {
    local tag=$1 pkg=${2:-} entry=${3:-} rootfs mirror suite cmd='["sh"]'
    read -r mirror suite < <(apt_mirror)
    rootfs=$(mktemp -d /tmp/ds01q-svc.XXXXXX)
    log "building $tag: debootstrap --variant=minbase ${pkg:+--include=$pkg }$suite from $mirror"
    debootstrap --variant=minbase ${pkg:+--include="$pkg"} "$suite" "$rootfs" "$mirror" >/tmp/ds01q-debootstrap.log 2>&1 \
        || { rm -rf "$rootfs"; die "debootstrap for $tag failed; see /tmp/ds01q-debootstrap.log"; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    if [ -n "$entry" ]; then
        install -m 0755 /dev/stdin "$rootfs/usr/local/bin/ds01q-entry" <<<"$entry"
        cmd='["/usr/local/bin/ds01q-entry"]'
    fi
    tar -C "$rootfs" --numeric-owner -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change "CMD $cmd" - "$tag" >/dev/null
    rm -rf "$rootfs"
}

# The security tests need a /bin/sh that honours LD_PRELOAD, like every Ubuntu/CUDA image.
if docker image inspect "$DEBIAN_IMAGE" >/dev/null 2>&1; then
    log "image $DEBIAN_IMAGE exists"
else
    build_service_image "$DEBIAN_IMAGE"
fi
docker run --rm "$DEBIAN_IMAGE" sh -c 'ldd /bin/sh | grep -q libc' || die "$DEBIAN_IMAGE has no dynamically linked /bin/sh"

REDIS_ENTRY='#!/bin/sh
exec redis-server --bind 0.0.0.0 --port 6379 --protected-mode no --save "" --appendonly no "$@"'

# POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB as the official image reads them (testcontainers sets them).
POSTGRES_ENTRY='#!/bin/sh
set -e
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
data=/var/lib/postgresql/data
user=${POSTGRES_USER:-postgres}; db=${POSTGRES_DB:-$user}; pw=${POSTGRES_PASSWORD:-postgres}
if [ ! -s "$data/PG_VERSION" ]; then
    mkdir -p "$data" /run/postgresql && chown postgres:postgres "$data" /run/postgresql
    printf "%s\n" "$pw" >/tmp/pw && chown postgres /tmp/pw
    su postgres -s /bin/sh -c "$bin/initdb -D $data -U $user --pwfile=/tmp/pw --auth-local=trust --auth-host=md5"
    rm -f /tmp/pw
    echo "listen_addresses = '"'"'*'"'"'" >>"$data/postgresql.conf"
    echo "host all all 0.0.0.0/0 md5" >>"$data/pg_hba.conf"
    su postgres -s /bin/sh -c "$bin/pg_ctl -D $data -w -o \"-c listen_addresses=\" start"
    [ "$db" = postgres ] || su postgres -s /bin/sh -c "$bin/createdb -U $user -O $user $db"
    su postgres -s /bin/sh -c "$bin/pg_ctl -D $data -w stop"
fi
mkdir -p /run/postgresql && chown postgres:postgres /run/postgresql
exec su postgres -s /bin/sh -c "exec $bin/postgres -D $data -c fsync=off -c synchronous_commit=off"'

if [ "$ALL" -eq 1 ]; then
    for spec in "ds01q/redis:test redis-server" "ds01q/postgres:test postgresql"; do
        read -r tag pkg <<<"$spec"
        if docker image inspect "$tag" >/dev/null 2>&1; then
            log "image $tag exists"
        elif [ "$pkg" = redis-server ]; then
            build_service_image "$tag" "$pkg" "$REDIS_ENTRY"
        else
            build_service_image "$tag" "$pkg" "$POSTGRES_ENTRY"
        fi
    done
fi

# ---------------------------------------------------------------- redis + postgres
if [ "$ALL" -eq 1 ]; then
    if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
        log "redis already up"
    else
        log "starting redis-server on 127.0.0.1:6379"
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 \
            --logfile /var/log/redis-ci.log --dir /tmp --save '' --appendonly no
        for _ in $(seq 1 20); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done
        redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || die "redis-server did not start; see /var/log/redis-ci.log"
    fi

    if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
        log "postgresql already up"
    else
        read -r pg_ver pg_cluster < <(pg_lsclusters -h 2>/dev/null | awk 'NR==1 {print $1, $2}') || true
        if [ -z "${pg_ver:-}" ]; then
            pg_ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
            pg_cluster=main
            log "creating PostgreSQL cluster $pg_ver/$pg_cluster"
            pg_createcluster "$pg_ver" "$pg_cluster" >/dev/null
        fi
        log "starting PostgreSQL $pg_ver/$pg_cluster"
        pg_ctlcluster "$pg_ver" "$pg_cluster" start
        for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
        pg_isready -q -h 127.0.0.1 -p 5432 || die "PostgreSQL did not start; see /var/log/postgresql/"
    fi
fi
log "ready"
