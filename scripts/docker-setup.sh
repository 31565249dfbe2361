#!/bin/sh
# Make a working docker daemon and the local test base image available on this machine.
#
# 1. Installs docker.io (dockerd) and debootstrap from Debian's packages when missing.
# 2. Starts dockerd in the background when no daemon answers (it keeps running afterwards).
# 3. Builds the base image $MODELFMT_BASE_IMAGE (default modelfmt-base:bookworm) with
#    `debootstrap --variant=minbase bookworm` + python3, python3-venv, ca-certificates, then
#    `docker import`; skipped when the tag already exists (Docker Hub is not reachable here).
# Idempotent: a second run does nothing but check. Needs root for steps 1-3 when they have work.
set -eu

BASE_IMAGE="${MODELFMT_BASE_IMAGE:-modelfmt-base:bookworm}"
SUITE="${MODELFMT_BASE_SUITE:-bookworm}"
LOG_DIR="${MODELFMT_DOCKER_LOG_DIR:-/var/log}"

say() { echo "docker-setup: $*" >&2; }

# The Debian mirror apt already uses (deb822 or one-line sources), so debootstrap goes the same way.
debian_mirror() {
    if [ -n "${MODELFMT_DEBIAN_MIRROR:-}" ]; then echo "$MODELFMT_DEBIAN_MIRROR"; return; fi
    m=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
    [ -n "$m" ] || m=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
    echo "${m:-http://deb.debian.org/debian}"
}

install_packages() {
    need=""
    command -v dockerd >/dev/null 2>&1 || need="$need docker.io"
    command -v debootstrap >/dev/null 2>&1 || need="$need debootstrap"
    [ -n "$need" ] || return 0
    say "installing$need"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
}

daemon_up() { docker info >/dev/null 2>&1; }

start_daemon() {
    daemon_up && return 0
    if ! pgrep -x dockerd >/dev/null 2>&1; then
        say "starting dockerd (log: $LOG_DIR/dockerd.log)"
        mkdir -p "$LOG_DIR"
        # setsid: the daemon must outlive this script and the make/CI process group that ran it.
        setsid nohup dockerd >"$LOG_DIR/dockerd.log" 2>&1 </dev/null &
    fi
    i=0
    until daemon_up; do
        i=$((i + 1))
        if [ "$i" -gt 60 ]; then
            say "dockerd did not answer within 60 s; see $LOG_DIR/dockerd.log"
            tail -n 20 "$LOG_DIR/dockerd.log" >&2 || true
            exit 1
        fi
        sleep 1
    done
}

build_base_image() {
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        say "base image $BASE_IMAGE present"
        return 0
    fi
    mirror=$(debian_mirror)
    root=$(mktemp -d /tmp/modelfmt-rootfs.XXXXXX)
    trap 'rm -rf "$root"' EXIT
    say "building $BASE_IMAGE: debootstrap --variant=minbase $SUITE from $mirror (a few minutes)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$SUITE" "$root" "$mirror" >"$LOG_DIR/modelfmt-debootstrap.log" 2>&1 || {
        say "debootstrap failed; see $LOG_DIR/modelfmt-debootstrap.log"
        tail -n 20 "$LOG_DIR/modelfmt-debootstrap.log" >&2
        exit 1
    }
    # Keep the image small: package caches and docs are not needed to run Python.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
    tar -C "$root" -c . | docker import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
    say "base image $BASE_IMAGE built"
}

install_packages
start_daemon
build_base_image
