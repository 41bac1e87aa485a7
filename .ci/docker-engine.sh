# Sourced by .ci/run: a Docker engine for the docker-marked tests, and its removal.
#   docker_up    install docker.io, docker-compose, debootstrap (apt, when missing); start dockerd
#                unless one already answers; build the images without any registry
#                (compose/build_base.sh: a debootstrap base, then compose/Dockerfile)
#   docker_down  stop the dockerd that docker_up started, delete the DOCKER* iptables chains and
#                docker0 it leaves behind, restore `iptables -P FORWARD ACCEPT` (run it from a trap)
# TESTBED_CI_DOCKER=0 skips both (the docker tests then skip).

_DOCKERD_PID=""

docker_up() {
    [ "${TESTBED_CI_DOCKER:-1}" = 0 ] && { echo "docker: skipped (TESTBED_CI_DOCKER=0)"; return 0; }
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "docker: apt-get install ${missing[*]}"
        apt-get update -q >/tmp/ci-apt.log 2>&1
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >>/tmp/ci-apt.log 2>&1 \
            || { tail -n 20 /tmp/ci-apt.log >&2; return 1; }
    fi
    if ! timeout 10 docker info >/dev/null 2>&1; then
        dockerd >/tmp/ci-dockerd.log 2>&1 &
        _DOCKERD_PID=$!
        local waited=0
        until timeout 5 docker info >/dev/null 2>&1; do
            sleep 1
            waited=$((waited + 1))
            if [ "$waited" -ge 60 ] || ! kill -0 "$_DOCKERD_PID" 2>/dev/null; then
                echo "docker: dockerd did not come up" >&2
                tail -n 20 /tmp/ci-dockerd.log >&2
                return 1
            fi
        done
        echo "docker: dockerd $_DOCKERD_PID up after ${waited} s"
    fi
    compose/build_base.sh
    export TESTBED_REQUIRE_DOCKER=1  # the docker tests fail instead of skipping
}

docker_down() {
    [ -n "$_DOCKERD_PID" ] || return 0
    docker ps -aq --filter label=fedge-testbed.run | xargs -r docker rm -f >/dev/null 2>&1 || true
    kill "$_DOCKERD_PID" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$_DOCKERD_PID" 2>/dev/null || break; sleep 1; done
    kill -9 "$_DOCKERD_PID" 2>/dev/null || true
    local table chain
    for table in filter nat; do
        iptables -t "$table" -S 2>/dev/null | grep -E '^-A (INPUT|FORWARD|OUTPUT|PREROUTING|POSTROUTING) .*(DOCKER|docker0)' \
            | sed 's/^-A /-D /' | while read -r rule; do eval "iptables -t $table $rule" || true; done
        for chain in $(iptables -t "$table" -S 2>/dev/null | awk '/^-N DOCKER/ {print $2}'); do
            iptables -t "$table" -F "$chain" 2>/dev/null || true
        done
        for chain in $(iptables -t "$table" -S 2>/dev/null | awk '/^-N DOCKER/ {print $2}'); do
            iptables -t "$table" -X "$chain" 2>/dev/null || true
        done
    done
    iptables -P FORWARD ACCEPT 2>/dev/null || true
    ip link delete docker0 2>/dev/null || true
    echo "docker: dockerd stopped, its iptables chains removed"
}
