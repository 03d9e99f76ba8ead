#!/bin/sh
# Healthcheck of the chatq image (docker-compose.yml): exit 0 when the service
# in this container works, 1 otherwise.
#   chatq-health api|processor|handler|fake-upstream
set -eu

host=$(hostname)
rcli() { redis-cli -u "${REDIS_URL:-redis://127.0.0.1:6379/0}" --no-auth-warning "$@"; }

case "${1:-}" in
api)
    # 200 only when the api answers and Redis answers its PING.
    curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:${PORT:-3000}/health"
    ;;
processor)
    # The processor names its Redis connections after its consumer once it is
    # connected and reading, and uses one of them every 50 ms (the wait-room
    # dispatch): Redis saw one of them a moment ago.
    rcli CLIENT LIST | awk -v me="processor-$host-" '
        {
            named = 0; idle = -1
            for (i = 1; i <= NF; i++) {
                if (index($i, "name=" me) == 1) named = 1
                if ($i ~ /^idle=/) idle = substr($i, 6) + 0
            }
            if (named && idle >= 0 && idle < 10) ok = 1
        }
        END { exit !ok }'
    ;;
handler)
    # The handler reads the results stream at least once per HANDLER_BLOCK_MS,
    # on its one connection: Redis saw that connection from this container a
    # moment ago (this check's own connection aside). A consumer's idle time in
    # XINFO CONSUMERS does not tell: Redis 7.0 renews it only when a read
    # delivers something.
    limit=$((3 * ${HANDLER_BLOCK_MS:-1000} / 1000 + 10))
    rcli CLIENT LIST | awk -v me="addr=$(hostname -i | cut -d' ' -f1):" -v limit="$limit" '
        index($0, " " me) && !/ cmd=client\|list / {
            for (i = 1; i <= NF; i++)
                if ($i ~ /^idle=/ && substr($i, 6) + 0 < limit) ok = 1
        }
        END { exit !ok }'
    ;;
fake-upstream)
    curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:8089/health"
    ;;
*)
    echo "usage: chatq-health api|processor|handler|fake-upstream" >&2
    exit 2
    ;;
esac
