#!/bin/sh
# Healthcheck of the chatq image (docker-compose.yml): exit 0 when the service
# in this container works, 1 otherwise.
#   chatq-health api|processor|handler|fake-upstream
# api, processor, handler: their own probes (README "Probes"): /healthz, the
# process turns, and /readyz, Redis answers and the binary's group exists.
set -eu

get() { # url
    curl -fsS -o /dev/null --max-time 5 "$1"
}
probes() { # port
    get "http://127.0.0.1:$1/healthz" && get "http://127.0.0.1:$1/readyz"
}

case "${1:-}" in
api)
    probes "${PORT:-3000}"
    ;;
processor | handler)
    # docker-compose.yml sets METRICS_PORT for them; without it there is no probe.
    [ "${METRICS_PORT:-0}" != 0 ] || { echo "METRICS_PORT is not set" >&2; exit 1; }
    probes "$METRICS_PORT"
    ;;
fake-upstream)
    get "http://127.0.0.1:8089/health"
    ;;
*)
    echo "usage: chatq-health api|processor|handler|fake-upstream" >&2
    exit 2
    ;;
esac
