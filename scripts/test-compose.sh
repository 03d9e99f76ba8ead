#!/usr/bin/env bash
# make test-compose: docker-compose.yml tried as a new user on Debian 12 would.
# Installs Docker, Compose and debootstrap from Debian when missing, starts a
# Docker engine when none answers, makes the Debian base image when it does not
# exist (scripts/docker-base.sh), builds the images and runs the stack with the
# bundled fake upstream under a project name of its own, then checks:
#   - every service becomes healthy;
#   - a chat completes through nginx and the api (with a gateway key from a
#     docker secret);
#   - after SIGHUP the api takes the keys now in that secret, and not the old one;
#   - --scale processor=3 gives three working processors, each scraped by the
#     Prometheus of the "metrics" profile (as are the api and the handler);
#   - chats sent before and while a processor is killed (docker kill) all complete;
#   - `down` leaves no container, network or volume of the project.
# Everything it started is removed on the way out, also when a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

t0=$(date +%s)
step() { echo "== test-compose [$(($(date +%s) - t0)) s] $*"; }
fail() { echo "test-compose: FAILED: $*" >&2; exit 1; }

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

scripts/deps.sh compose

tmp=$(mktemp -d /tmp/chatq-compose.XXXXXX)
project=chatqtest$$
dockerd_pid=""
up=0

# docker-compose with only what this test sets: no .env of the checkout and no
# setting of the caller's shell (an OPENAI_API_KEY, say) reaches the stack.
dc() {
    env -i PATH="$PATH" HOME="${HOME:-/root}" ${DOCKER_HOST:+DOCKER_HOST="$DOCKER_HOST"} \
        docker-compose --env-file "$tmp/env" -p "$project" -f docker-compose.yml \
        --profile metrics "$@"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "$up" -eq 1 ]; then
        if [ "$rc" -ne 0 ]; then
            echo "---- docker-compose ps, and the last log lines of each service" >&2
            dc ps >&2 || true
            dc logs --no-color --tail=30 >&2 || true
        fi
        dc down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
    fi
    rm -rf "$tmp"
    if [ -n "$dockerd_pid" ]; then
        $sudo kill -TERM "$dockerd_pid" 2>/dev/null || true
        wait "$dockerd_pid" 2>/dev/null || true
    fi
    if [ "$rc" -eq 0 ]; then
        echo "test-compose: passed in $(($(date +%s) - t0)) s"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

poll() { # seconds what command...: until the command succeeds
    local limit=$(($(date +%s) + $1)) what=$2
    shift 2
    until "$@"; do
        [ "$(date +%s)" -lt "$limit" ] || fail "$what"
        sleep 1
    done
}

# ---- the engine and the base image ---------------------------------------------
if ! docker info >/dev/null 2>&1; then
    step "starting a Docker engine"
    mkdir -p build/compose
    # Without iptables and masquerading, as this engine may share the host with
    # other networking; builds use the host network (docker-compose.yml).
    $sudo setsid dockerd --storage-driver=overlay2 --iptables=false --ip-masq=false \
        >build/compose/dockerd.log 2>&1 &
    dockerd_pid=$!
    poll 60 "the Docker engine did not answer (build/compose/dockerd.log)" \
        eval 'docker info >/dev/null 2>&1'
fi

step "the base image"
scripts/docker-base.sh

# ---- up ------------------------------------------------------------------------
key=test-key-$RANDOM$RANDOM$RANDOM
printf '# gateway keys of the compose test\n%s\n' "$key" >"$tmp/api_keys"
chmod 644 "$tmp/api_keys"
# API_PUBLISH ending in ':' lets Docker pick a free loopback port. A short
# CLAIM_IDLE_MS lets the surviving processors take over a killed one's chats soon.
cat >"$tmp/env" <<EOF
API_PUBLISH=127.0.0.1:
PROMETHEUS_PUBLISH=127.0.0.1:
API_KEYS_SECRET=$tmp/api_keys
CLAIM_IDLE_MS=3000
FAKE_LATENCY_MS=200
EOF

step "building the images"
dc build >"$tmp/build.log" 2>&1 || { tail -30 "$tmp/build.log" >&2; fail "docker-compose build"; }

step "docker-compose up"
up=1
dc up -d >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log" >&2; fail "docker-compose up"; }
api=$(dc port front 8080 | tail -1)
[ -n "$api" ] || fail "the front's port is not published"
api=http://$api

# Every running container of the project reports healthy, and there are $1 of them.
all_healthy() { # count
    local ids n=0 id status
    ids=$(docker ps -q --filter "label=com.docker.compose.project=$project")
    for id in $ids; do
        status=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$id")
        [ "$status" = healthy ] || return 1
        n=$((n + 1))
    done
    [ "$n" -eq "$1" ]
}
step "waiting for the 7 services to become healthy"
poll 180 "not every service became healthy" all_healthy 7

# ---- one chat ------------------------------------------------------------------
post() { # message: prints the traceId
    curl -fsS -X POST "$api/chat" -H "Authorization: Bearer $key" \
        -H 'Content-Type: application/json' -d "{\"message\":\"$1\"}" |
        sed -n 's/.*"traceId":"\([^"]*\)".*/\1/p'
}
status_of() { # traceId
    curl -fsS "$api/chat/$1/response" -H "Authorization: Bearer $key" |
        sed -n 's/.*"status":"\([a-z]*\)".*/\1/p'
}

step "a chat through the api"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$api/chat" -d '{"message":"hi"}')
[ "$code" = 401 ] || fail "a chat without the gateway key got $code, not 401"
trace=$(post "Hello from compose")
[ -n "$trace" ] || fail "POST /chat gave no traceId"
completed() { [ "$(status_of "$1")" = completed ]; }
poll 30 "chat $trace did not complete" completed "$trace"
curl -fsS "$api/chat/$trace/response" -H "Authorization: Bearer $key" |
    grep -q '"response":"Fake answer to: Hello from compose"' ||
    fail "chat $trace completed without the fake upstream's answer"

step "a new gateway key after SIGHUP"
# Written in place, as the bind-mounted secret follows the file, not its name.
old_key=$key
key=test-key-$RANDOM$RANDOM$RANDOM
printf '# gateway keys of the compose test, rotated\n%s\n' "$key" >"$tmp/api_keys"
docker kill -s HUP "$(dc ps -q api)" >/dev/null
old_refused() {
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$api/chat/$trace/response" \
        -H "Authorization: Bearer $old_key")" = 401 ]
}
poll 20 "the old gateway key still works after SIGHUP" old_refused
trace=$(post "After the key rotation")
[ -n "$trace" ] || fail "POST /chat with the new gateway key gave no traceId"
poll 30 "chat $trace of the new gateway key did not complete" completed "$trace"

# ---- three processors ------------------------------------------------------------
# docker exec, as docker-compose exec takes seconds to start on a loaded machine.
redis_id=$(dc ps -q redis)
redis() { docker exec "$redis_id" redis-cli "$@"; }
processors_reading() { # count: distinct processors connected to Redis
    [ "$(redis CLIENT LIST | grep -o ' name=processor-[^ ]*' | sort -u | wc -l)" -eq "$1" ]
}

step "--scale processor=3"
dc up -d --no-recreate --scale processor=3 >"$tmp/scale.log" 2>&1 ||
    { cat "$tmp/scale.log" >&2; fail "docker-compose up --scale processor=3"; }
poll 120 "the 3 processors and the other services did not all become healthy" all_healthy 9
poll 30 "3 processors did not connect to Redis" processors_reading 3
prometheus=http://$(dc port prometheus 9090 | tail -1)
targets_up() { # count: Prometheus scrapes that many targets, all up
    local t
    t=$(curl -fsS "$prometheus/api/v1/targets?state=active") || return 1
    [ "$(echo "$t" | grep -o '"health":"up"' | wc -l)" -eq "$1" ] &&
        ! echo "$t" | grep -q '"health":"down"'
}
poll 60 "Prometheus does not scrape the api, the handler and 3 processors" targets_up 5

# ---- a processor killed with chats in flight ---------------------------------------
# The fake holds each of these chats 8 s, so every processor holds some when one
# of them is killed; chats sent after the kill go to the survivors or wait in the
# stream. Every one must complete.
traces=()
send() { # count tag
    local i t
    for ((i = 0; i < $1; i++)); do
        t=$(post "[[fake latency=8000]] $2 $i")
        [ -n "$t" ] || fail "POST /chat $2 $i gave no traceId"
        traces+=("$t")
    done
}
step "30 chats, then docker kill of a processor holding some, then 30 more"
send 30 before
# The processor holding the most of them (XPENDING's summary lists each consumer
# with its count); its consumer name ends in its container's host name and pid.
victim_holds() {
    victim=$(redis XPENDING chatq:requests processors |
        awk '/^processor-/ { name = $0; next } name != "" { print $0, name; name = "" }' |
        sort -rn | awk '$1 > 0 { print $2; exit }')
    [ -n "$victim" ]
}
poll 20 "no processor holds any of the chats" victim_holds
held=$(redis XPENDING chatq:requests processors | grep -A1 -x "$victim" | tail -1)
container=$(echo "$victim" | sed 's/^processor-\(.*\)-[0-9]*$/\1/')
docker kill "$container" >/dev/null
echo "   killed $victim holding $held chats"
send 30 during

all_completed() {
    local t s
    for t in "${traces[@]}"; do
        s=$(status_of "$t")
        [ "$s" = completed ] || return 1
    done
}
poll 90 "not every chat sent before and during the kill completed" all_completed
echo "   ${#traces[@]} of ${#traces[@]} chats completed"

# The killed processor stays down (docker kill is a manual stop); the other
# eight containers are healthy.
poll 60 "the services left running are not all healthy" all_healthy 8

# ---- down ----------------------------------------------------------------------
step "docker-compose down"
dc down -v --remove-orphans >"$tmp/down.log" 2>&1 || { cat "$tmp/down.log" >&2; fail "docker-compose down"; }
up=0
label="label=com.docker.compose.project=$project"
left="$(docker ps -aq --filter "$label")$(docker network ls -q --filter "$label")$(docker volume ls -q --filter "$label")"
[ -z "$left" ] || fail "down left containers, networks or volumes of $project: $left"
