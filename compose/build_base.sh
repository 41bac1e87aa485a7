#!/usr/bin/env bash
# Build the images the Docker backend runs, without any image registry:
#   1. BASE (default fedge-testbed-base:bookworm): a minimal Debian made with debootstrap from
#      the Debian mirror apt already uses, plus the shared libraries the host's Python
#      (/usr/local, mounted read-only into every container) links against;
#   2. IMAGE (default fedge-testbed:latest): compose/Dockerfile on top of BASE.
# Idempotent: an image that already exists is kept (FORCE=1 rebuilds both).
# Where a registry is reachable, skip step 1: BASE=python:3.11-slim-bookworm compose/build_base.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BASE="${BASE:-fedge-testbed-base:bookworm}"
IMAGE="${IMAGE:-fedge-testbed:latest}"
SUITE="${SUITE:-bookworm}"
MIRROR="${MIRROR:-$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
LIBS="libssl3,libsqlite3-0,libffi8,libbz2-1.0,liblzma5,zlib1g,libstdc++6,libgomp1,ca-certificates"

exists() { docker image inspect "$1" >/dev/null 2>&1; }

if [ "${FORCE:-0}" = 1 ]; then docker image rm -f "$IMAGE" "$BASE" >/dev/null 2>&1 || true; fi

if exists "$BASE"; then
    echo "base image $BASE: present"
elif [[ "$BASE" == fedge-testbed-base:* ]]; then
    command -v debootstrap >/dev/null || { echo "debootstrap missing: apt-get install -y debootstrap" >&2; exit 1; }
    root="$(mktemp -d /tmp/fedge-base.XXXXXX)"
    trap 'rm -rf "$root"' EXIT
    echo "debootstrap $SUITE from $MIRROR into $root (about a minute)"
    debootstrap --variant=minbase --include="$LIBS" "$SUITE" "$root" "$MIRROR" >/tmp/fedge-debootstrap.log 2>&1 \
        || { tail -n 20 /tmp/fedge-debootstrap.log >&2; exit 1; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | docker import - "$BASE" >/dev/null
    echo "base image $BASE: built"
else
    echo "base image $BASE: not present locally; docker build will pull it" >&2
fi

if exists "$IMAGE" && [ "${FORCE:-0}" != 1 ]; then
    echo "image $IMAGE: present"
else
    DOCKER_BUILDKIT=0 docker build -q --build-arg BASE_IMAGE="$BASE" -t "$IMAGE" -f compose/Dockerfile compose >/dev/null
    echo "image $IMAGE: built"
fi
