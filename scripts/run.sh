#!/usr/bin/env bash
# make run: the whole system on this machine, in the foreground.
# Starts redis-server (data in run/redis; AOF on, fsynced before every reply
# unless REDIS_APPENDFSYNC=everysec: see README "Durability"), the fake
# upstream when no OPENAI_API_KEY is set, then chatq-api, chatq-processor and
# chatq-handler, and nginx in front of chatq-api (front/nginx.conf.in: clients
# connect to nginx on PORT, the api listens on 127.0.0.1:API_PORT; FRONT=0
# puts the api itself on PORT).
# Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

REDIS_PORT=${REDIS_PORT:-6380}
PORT=${PORT:-3000}
API_PORT=${API_PORT:-3001}
FAKE_PORT=${FAKE_PORT:-8089}
FRONT=${FRONT:-1}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:$REDIS_PORT/0}
export LOG_LEVEL=${LOG_LEVEL:-info}

# Each child runs in its own session so that Ctrl-C reaches only this script,
# which then stops them in order: api, processor, handler, fake, Redis last.
pids=()
stop() {
    trap - INT TERM EXIT
    echo
    echo "Stopping chatq..."
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[i]}" 2>/dev/null || true
        wait "${pids[i]}" 2>/dev/null || true
    done
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

wait_for() { # what, command...
    local what=$1; shift
    for _ in $(seq 1 100); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "make run: $what did not become ready; see the log lines above" >&2
    exit 1
}

mkdir -p run/redis
if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    echo "make run: something already answers on port $REDIS_PORT; set REDIS_PORT=<free port>" >&2
    exit 1
fi
setsid redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$PWD/run/redis" \
    --appendonly yes --appendfsync "${REDIS_APPENDFSYNC:-always}" --save '' \
    --loglevel warning &
pids+=($!)
wait_for "redis-server" redis-cli -p "$REDIS_PORT" ping

if [ -z "${OPENAI_API_KEY:-}" ] && [ -z "${OPENAI_BASE_URL:-}" ]; then
    setsid bin/chatq-fake-upstream --port "$FAKE_PORT" --latency-ms "${FAKE_LATENCY_MS:-300}" &
    pids+=($!)
    export OPENAI_BASE_URL=http://127.0.0.1:$FAKE_PORT/v1
    wait_for "the fake upstream" curl -fs "http://127.0.0.1:$FAKE_PORT/health"
    cat <<MSG

  ***************************************************************************
  *  OPENAI_API_KEY is not set: chatq is answering with its FAKE upstream.  *
  *  Answers are generated, not from a model. For real answers:            *
  *      OPENAI_API_KEY=sk-... make run                                     *
  *  or another OpenAI-compatible server (Ollama, vLLM, llama.cpp):         *
  *      OPENAI_BASE_URL=http://127.0.0.1:11434/v1 make run                 *
  ***************************************************************************

MSG
fi

setsid bin/chatq-handler &
pids+=($!)
setsid bin/chatq-processor &
pids+=($!)
if [ "$FRONT" = 1 ]; then
    # The api on loopback, nginx in front on PORT for everyone else.
    HOST=127.0.0.1 PORT=$API_PORT setsid bin/chatq-api &
    pids+=($!)
    wait_for "chatq-api" curl -fs "http://127.0.0.1:$API_PORT/health"
    mkdir -p run/front
    sed -e "s|@LISTEN@|${HOST:-0.0.0.0}:$PORT|" -e "s|@API@|127.0.0.1:$API_PORT|" \
        -e "s|@DIR@|$PWD/run/front|" front/nginx.conf.in >run/front/nginx.conf
    setsid nginx -e stderr -p "$PWD/run/front" -c "$PWD/run/front/nginx.conf" &
    pids+=($!)
    wait_for "nginx (the front)" curl -fs "http://127.0.0.1:$PORT/health"
else
    PORT=$PORT setsid bin/chatq-api &
    pids+=($!)
    wait_for "chatq-api" curl -fs "http://127.0.0.1:$PORT/health"
fi

cat <<MSG

chatq is up on http://127.0.0.1:$PORT (Redis on port $REDIS_PORT$( [ "$FRONT" = 1 ] && echo "; nginx in front of the api on 127.0.0.1:$API_PORT")). Try:

  curl -s -X POST http://127.0.0.1:$PORT/chat -H 'Content-Type: application/json' \\
       -d '{"message":"Hello, how are you?","model":"gpt-3.5-turbo","temperature":0.7}'
  curl -s http://127.0.0.1:$PORT/chat/<traceId>/response

Watch it:  redis-cli -p $REDIS_PORT XINFO GROUPS chatq:requests
$( [ -z "${API_KEYS:-}${API_KEYS_FILE:-}" ] && printf '%s\n' \
"The gateway is OPEN: anyone who reaches port $PORT spends the upstream key. To need a key:" \
"  openssl rand -hex 24 >> run/api-keys && API_KEYS_FILE=run/api-keys make run")
Ctrl-C stops everything.

MSG
# Any of them exiting brings the rest down, so nothing half-runs unnoticed.
wait -n "${pids[@]}"
echo "make run: a process exited; stopping the rest" >&2
exit 1
