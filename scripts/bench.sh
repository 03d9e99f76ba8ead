#!/usr/bin/env bash
# make bench: chatq's performance table, each figure beside a floor or
# reference measured in the same run on the same machine.
#
# 1. Builds the bench programs (bench/*.c -> build/bench/): floor (the civetweb
#    floors), loadgen (the HTTP load generator), watch (watches a run to its end).
# 2. On a throw-away redis-server: floor (a) bare civetweb, (b) + one pipelined
#    XADD+HSET, (c) + one HGETALL; then chatq-api alone: POST /chat at its peak
#    and at half of it, GET /chat/{id}/response.
# 3. On a second, fresh redis-server, the whole stack (api, processor, handler,
#    two fake upstreams: instant and 1 s): idle RSS, 20 000 chats end to end with
#    the instant upstream (throughput, tail, CPU per chat, memory), 16 000 with
#    the 1 s upstream (requests in flight, processor memory), and the cost at
#    100, 1 000 and 4 000 requests in flight. The 1 s upstream run once more
#    over TLS + HTTP/2 (nginx in front of the fake, a CA made with openssl, the
#    processor trusting it through UPSTREAM_CA_FILE): completions/s, and from
#    nginx's access log how many TCP connections carried the calls in flight.
# 0. On a redis-server of its own, POST /chat with gateway keys and quotas on (a
#    key file with rpm, inflight and models set high enough never to refuse)
#    against the same api without keys, in rounds of the two back to back: the
#    median of the rounds' on/off (target >= 0.90). BENCH_ONLY=keys runs this
#    phase alone.
# 4. On a third redis-server, rate limits (burst): 20 x R chats posted at once
#    into a fake upstream that allows R requests per second, with three
#    processors, pacing off (their defaults) and pacing on (UPSTREAM_RPM, when
#    this chatq-processor has it): completed, failed, 429 share, throughput
#    against R, peak of parked chats; and pacing on over TLS + HTTP/2 (nginx),
#    with its connection count. The TLS rows are n/a without nginx and openssl.
# 5. Waiting clients, on a fourth redis-server: one chatq-api with
#    WAIT_THREADS=BENCH_WAITERS holds that many long-polls (GET .../response?wait=)
#    on as many chats at once (bench/waiters.c); POST /chat throughput with them
#    waiting against the same api without them; the api's memory per waiting
#    client (RSS with them waiting minus RSS of an api without wait threads); its
#    Redis connections meanwhile; then every chat is marked completed at once
#    (HSET + PUBLISH, as the handler does) and every waiter must get it.
#
# Progress goes to stderr, the table to stdout, the same data as JSON to
# bench/out/results-<UTC>.json and bench/out/latest.json. A missed target is
# reported, never an error: the exit status is non-zero only when the bench
# could not run (a program did not build, a process did not start).
#
# Settings (environment), with defaults:
#   BENCH_BIN_DIR=bin          where chatq-api & co. are
#   BENCH_DURATION=5           seconds of each HTTP measurement (after warm-up)
#   BENCH_WARMUP=1             seconds of warm-up not counted
#   BENCH_CONNS=64             connections of the HTTP measurements
#   BENCH_E2E_CHATS=20000      chats of the instant-upstream run
#   BENCH_SLOW_CHATS=16000     chats of the 1 s upstream run
#   BENCH_SLOW_CONCURRENCY=8192  PROCESSOR_CONCURRENCY of the 1 s upstream runs
#   BENCH_GROWTH="100 1000 4000" requests in flight of the cost-growth runs
#   BENCH_GROWTH_SECONDS=4     seconds of load of each cost-growth run
#   BENCH_RL_RATE=100          R, the rate-limited upstream's requests per second;
#                              the burst is 20 x R chats
#   BENCH_RL_TIMEOUT=40        seconds a burst may take to end
#   BENCH_WAITERS=10000        long-polls held open at once in phase 5
#   BENCH_KEEP=1               keep the temp dir (logs of every process)
#   BENCH_KEYS_ROUNDS=5        rounds of the keys-and-quotas comparison
#   BENCH_ONLY=keys            run only the keys-and-quotas comparison (phase 0)
set -euo pipefail
cd "$(dirname "$0")/.."


BIN=${BENCH_BIN_DIR:-bin}
DUR=${BENCH_DURATION:-5}
WARM=${BENCH_WARMUP:-1}
CONNS=${BENCH_CONNS:-64}
E2E_N=${BENCH_E2E_CHATS:-20000}
SLOW_N=${BENCH_SLOW_CHATS:-16000}
SLOW_CONC=${BENCH_SLOW_CONCURRENCY:-8192}
GROWTH=${BENCH_GROWTH:-100 1000 4000}
GROWTH_S=${BENCH_GROWTH_SECONDS:-4}
RL_R=${BENCH_RL_RATE:-100}
RL_N=$((RL_R * 20))
RL_TIMEOUT=${BENCH_RL_TIMEOUT:-40}
PREFIX="chatq-bench:"
OUT=bench/out
BB=build/bench
T0=$(date +%s.%N)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)

# ---- small helpers -------------------------------------------------------------

log() { printf 'bench [%5.1fs] %s\n' "$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{print b-a}')" "$*" >&2; }
die() { echo "bench: $*" >&2; exit 2; }

# calc DECIMALS EXPR VALUE...: EXPR in awk over a, b, c, ... bound to the
# VALUEs in order. Prints nothing when a value is missing or not a number, or
# on a division by zero: a figure that could not be measured stays empty.
calc() {
    local dec=$1 expr=$2 names=abcdefgh i=0 v
    shift 2
    local args=()
    for v in "$@"; do
        [[ $v =~ ^-?[0-9]+([.][0-9]+)?$ ]] || return 0
        args+=(-v "${names:i:1}=$v")
        i=$((i + 1))
    done
    awk "${args[@]}" "BEGIN { printf \"%.${dec}f\", $expr }" 2>/dev/null || true
}
# jget JSON KEY: the value of KEY in one of our flat JSON lines.
jget() {
    local v
    v=$(grep -o "\"$2\":[^,}]*" <<<"$1" | head -n1) || true
    v=${v#*:}
    echo "${v//\"/}"
}
# verdict OP A B: PASS/FAIL of A OP B (ge, le, lt); "n/a" when A is missing.
verdict() {
    [ -n "$2" ] || { echo "n/a"; return; }
    awk -v a="$2" -v b="$3" -v op="$1" 'BEGIN {
        ok = (op == "ge") ? a >= b : (op == "le") ? a <= b : a < b
        print ok ? "PASS" : "FAIL" }'
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true; }
# The private part of the RSS: VmRSS also counts the pages of shared libraries.
anon_kb() { awk '/^RssAnon:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true; }
json_str() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }

# ---- processes -------------------------------------------------------------------

TMP=$(mktemp -d "${TMPDIR:-/tmp}/chatq-bench.XXXXXX")
declare -A PID=()
ORDER=()
NOTES=()
note() { NOTES+=("$*"); log "NOTE: $*"; }

stop_proc() { # name
    local name=$1 pid=${PID[$1]:-} rc=0
    [ -n "$pid" ] || return 0
    unset "PID[$name]"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        note "$name (pid $pid) did not exit within 5 s of SIGTERM; killed"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || rc=$?
    # 143: killed by our SIGTERM before it installed a handler; fine too.
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 143 ]; then
        note "$name exited with status $rc on SIGTERM (log: $(tail -n 2 "$TMP/$name.log" 2>/dev/null | tr '\n' ' '))"
    fi
}

cleanup() {
    trap - EXIT INT TERM
    local i
    for ((i = ${#ORDER[@]} - 1; i >= 0; i--)); do stop_proc "${ORDER[i]}"; done
    if [ -n "${BENCH_KEEP:-}" ]; then
        echo "bench: logs kept in $TMP" >&2
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'echo "bench: interrupted" >&2; exit 130' INT TERM

start_proc() { # name cmd... (log in $TMP/name.log)
    local name=$1
    shift
    "$@" >"$TMP/$name.log" 2>&1 &
    PID[$name]=$!
    ORDER+=("$name")
}

alive() { [ -n "${PID[$1]:-}" ] && kill -0 "${PID[$1]}" 2>/dev/null; }

# need NAME...: 0 if all run; else a note naming the dead ones and 1.
need() {
    local n bad=0
    for n in "$@"; do
        if ! alive "$n"; then
            note "$n is not running (last log lines: $(tail -n 3 "$TMP/$n.log" 2>/dev/null | tr '\n' ' '))"
            bad=1
        fi
    done
    return $bad
}

# wait_until WHAT SECONDS PROCNAME CMD...: polls CMD every 50 ms.
wait_until() {
    local what=$1 secs=$2 name=$3 i
    shift 3
    for ((i = 0; i < secs * 20; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        if [ -n "$name" ] && ! alive "$name"; then
            tail -n 20 "$TMP/$name.log" >&2 || true
            die "$what exited while starting (log above)"
        fi
        sleep 0.05
    done
    tail -n 20 "$TMP/$name.log" >&2 || true
    die "$what was not ready after ${secs}s (log above)"
}

USED_PORTS=" "
free_port() { # VAR: a port nothing listens on, below the ephemeral range
    local p _
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        case $USED_PORTS in *" $p "*) continue ;; esac
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            USED_PORTS+="$p "
            printf -v "$1" '%s' "$p"
            return 0
        fi
    done
    die "no free port found"
}

http_ok() { curl -fsS -m 1 -o /dev/null "http://127.0.0.1:$1$2"; }
redis_ok() { [ "$(redis-cli -p "$1" ping 2>/dev/null)" = "PONG" ]; }
# readers_ok REDISPORT N: at least N clients wait in a blocking XREADGROUP. The
# handler and the processor show they are ready that way: Redis 7.0 adds a
# consumer to a group only once it has been given an entry, so XINFO CONSUMERS
# says nothing before the first chat.
readers_ok() {
    [ "$(redis-cli -p "$1" CLIENT LIST 2>/dev/null | grep -c 'flags=b .*cmd=xreadgroup')" -ge "$2" ]
}

start_redis() { # name port
    start_proc "$1" redis-server --port "$2" --bind 127.0.0.1 --dir "$TMP" \
        --save '' --appendonly no --loglevel warning
    wait_until "$1" 10 "$1" redis_ok "$2"
}

# ---- TLS + HTTP/2: nginx in front of a fake upstream ------------------------------
# As production reaches its upstream: HTTPS with HTTP/2, from a CA made here with
# the openssl CLI that the processor trusts through UPSTREAM_CA_FILE. nginx
# terminates TLS and proxies to the fake over kept-alive HTTP/1.1; its access
# log says which connection and protocol carried each call.

TLS_DIR=$TMP/tls
TLS_OK="" # 1 once the CA and the server certificate exist
tls_pki() {
    mkdir -p "$TLS_DIR"
    cat >"$TLS_DIR/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = chatq bench
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
authorityKeyIdentifier = keyid
EOF
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -noenc) d=$TLS_DIR
    openssl req -x509 -config "$d/openssl.cnf" -extensions ca "${ec[@]}" -keyout "$d/ca.key" \
        -out "$d/ca.pem" -days 2 -subj "/CN=chatq bench CA" &&
        openssl req -new -config "$d/openssl.cnf" "${ec[@]}" -keyout "$d/server.key" \
            -out "$d/server.csr" &&
        openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -days 2 \
            -extfile "$d/openssl.cnf" -extensions server -out "$d/server.pem"
} >>"$TMP/openssl.log" 2>&1

# tls_start NAME FAKEPORT: nginx (one process, no master) on a free port in front
# of the fake on FAKEPORT; sets TLS_PORT. Its access log is $TMP/NAME.access.log.
# Up to 128 streams on a connection (nginx's default, said here because the
# connection count depends on it), no limit on the calls a connection carries
# (nginx closes one after 1 000 by default), as many kept-alive connections to
# the fake as calls may be in flight.
tls_start() {
    local name=$1 d=$TLS_DIR
    free_port TLS_PORT
    mkdir -p "$d/$name"
    cat >"$d/$name.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $d/$name/nginx.pid;
error_log $TMP/$name.error.log warn;
events { worker_connections $((SLOW_CONC * 2 + 1024)); }
http {
    log_format chatq '\$connection \$server_protocol \$request_method \$uri \$status \$msec \$request_time';
    access_log $TMP/$name.access.log chatq;
    client_body_temp_path $d/$name/body;
    proxy_temp_path $d/$name/proxy;
    fastcgi_temp_path $d/$name/fastcgi;
    uwsgi_temp_path $d/$name/uwsgi;
    scgi_temp_path $d/$name/scgi;
    upstream fake { server 127.0.0.1:$2; keepalive $SLOW_CONC; }
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering off;
    proxy_request_buffering off;
    proxy_read_timeout 300s;
    http2_max_concurrent_streams 128;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$TLS_PORT ssl http2;
        ssl_certificate $d/server.pem;
        ssl_certificate_key $d/server.key;
        location / { proxy_pass http://fake; }
    }
}
EOF
    start_proc "$name" nginx -e "$TMP/$name.error.log" -p "$d/$name" -c "$d/$name.conf"
    wait_until "nginx ($name)" 10 "$name" curl -fsS -m 1 -o /dev/null --cacert "$d/ca.pem" \
        "https://127.0.0.1:$TLS_PORT/health"
}

# tls_spread ACCESSLOG: "calls connections busiest http2 in_flight single" of the
# chat calls logged: TCP connections, the most calls one connection carried,
# calls over HTTP/2, the most in flight at one time, connections that carried
# one call only (a start at the time of an end
# counts first: the log's times are in ms). Nothing when the log is empty.
tls_spread() {
    local sum inflight n conns most h2 single
    [ -s "$1" ] || return 0
    sum=$(awk '$3 == "POST" && $4 == "/v1/chat/completions" {
        n++; if (!($1 in per)) conns++; if (++per[$1] > most) most = per[$1]
        if ($2 == "HTTP/2.0") h2++ }
        END { for (c in per) single += per[c] == 1
              printf "%d %d %d %d %d", n, conns, most, h2, single }' "$1")
    inflight=$(awk '$3 == "POST" && $4 == "/v1/chat/completions" {
        printf "%.3f 1\n%.3f -1\n", $6 - $7, $6 }' "$1" | sort -k1,1n -k2,2nr |
        awk '{ now += $2; if (now > most) most = now } END { print most + 0 }')
    read -r n conns most h2 single <<<"$sum"
    echo "$n $conns $most $h2 $inflight $single"
}

# ---- checks and build ------------------------------------------------------------

for prog in chatq-api chatq-processor chatq-handler chatq-fake-upstream; do
    [ -x "$BIN/$prog" ] || die "$BIN/$prog is missing: build it first (make all)"
done
for tool in cc redis-server redis-cli curl awk shuf; do
    command -v "$tool" >/dev/null || die "$tool is needed"
done
# The TLS rows are n/a without nginx and openssl (make bench installs both).
if ! command -v nginx >/dev/null || ! command -v openssl >/dev/null; then
    note "nginx or openssl is missing: the TLS + HTTP/2 rows are n/a (scripts/deps.sh test installs them)"
elif tls_pki; then
    TLS_OK=1
else
    note "openssl could not make the test CA (log: $(tail -n 2 "$TMP/openssl.log" | tr '\n' ' ')): the TLS rows are n/a"
fi
# 8 000 upstream connections in one process need more than the usual 1 024 fds.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge $((SLOW_CONC + 1024)) ] ||
    log "warning: ulimit -n is $(ulimit -n); PROCESSOR_CONCURRENCY=$SLOW_CONC may run out of fds"

mkdir -p "$BB" "$OUT"
CFLAGS_BENCH="-std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Icommon $(pkg-config --cflags hiredis jansson libcurl libevent)"
log "building bench/floor.c bench/loadgen.c bench/watch.c bench/waiters.c -> $BB/"
# shellcheck disable=SC2086
{
    cc $CFLAGS_BENCH -o "$BB/floor" bench/floor.c -lcivetweb -lhiredis -lpthread &&
        cc $CFLAGS_BENCH -o "$BB/loadgen" bench/loadgen.c -lpthread -lm &&
        cc $CFLAGS_BENCH -o "$BB/watch" bench/watch.c -lhiredis &&
        cc $CFLAGS_BENCH -o "$BB/waiters" bench/waiters.c
} || die "the bench programs did not build"
LG=$BB/loadgen

# ---- the machine --------------------------------------------------------------------

NPROC=$(nproc)
CPU=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
[ -n "$CPU" ] || CPU=$(uname -m)
MEM_KB=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
KERNEL=$(uname -sr)
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
REDIS_VERSION=$(redis-server --version | grep -o 'v=[0-9.]*' | cut -d= -f2)
log "machine: $NPROC x $CPU, $(calc 1 'a/1048576' "$MEM_KB") GiB; $KERNEL; load average $LOADAVG"
# Everything here shares the machine's cores with whatever else runs.
awk -v l="${LOADAVG%% *}" -v n="$NPROC" 'BEGIN { exit !(l > n / 4) }' &&
    note "load average was $LOADAVG before the bench started: other work shares the $NPROC cores, figures will be noisy"

# ---- rows of the table -----------------------------------------------------------------

ROWS=()  # section|metric|value text|reference text|ratio|target|result|key|number|unit
row() { ROWS+=("$1|$2|$3|$4|$5|$6|$7|$8|$9|${10}"); }
declare -A RAW=()
ms() { [ -n "$1" ] && printf '%s ms' "$1" || echo "n/a"; }
num() { [ -n "$1" ] && echo "$1" || echo "n/a"; }

# lg_check NAME JSON: notes errors and non-2xx answers of a loadgen run.
lg_check() {
    local e n
    e=$(jget "$2" errors)
    n=$(jget "$2" non2xx)
    RAW[$1]=$2
    if [ -z "$2" ]; then
        note "$1: the load generator printed nothing"
        return
    fi
    [ "${e:-0}" = 0 ] || note "$1: $e requests failed (connection errors or timeouts)"
    [ "${n:-0}" = 0 ] || note "$1: $n answers were not 2xx: $(grep -o '"codes":{[^}]*}' <<<"$2")"
    [ "$(jget "$2" unsent)" = 0 ] || note "$1: $(jget "$2" unsent) requests fell due but were never sent (target rate too high)"
}

# ==== phase 0: gateway keys and quotas ================================================
# Two apis on one Redis, the same but for keys and quotas; alone (no processor, no
# handler: no chat ever ends, so the key's count of chats in flight grows all run long,
# which costs the same as a few: a count by slice). Rounds alternate off and on so that a slow
# spell of the machine is less likely to fall on one side only, and each starts on an
# emptied Redis: a round writes some 100 000 chats, and on one Redis throughout, the
# keyspace's growth (its table doubled and rehashed, fresh pages) fell on whichever
# round was running when it came. Emptied, every round grows the same way.

KEYS_ROUNDS=${BENCH_KEYS_ROUNDS:-5}
BENCH_KEY="kb-bench-7Hq2xVn9Lw3RtY6pZc1MdF8s"
median() { tr ' ' '\n' | { grep -E '^[0-9.]+$' || true; } | sort -n | awk '{ v[NR] = $1 }
    END { if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
free_port RPK
free_port APK0
free_port APK1
start_redis redis_keys "$RPK"
printf '# bench: limits far above what a run can reach\n%s rpm=1000000000 inflight=1000000000 models=gpt-3.5-turbo,gpt-4o\n' \
    "$BENCH_KEY" >"$TMP/keys"
start_proc api_nokeys env REDIS_URL="redis://127.0.0.1:$RPK/0" CHATQ_PREFIX="$PREFIX" PORT="$APK0" \
    HOST=127.0.0.1 API_THREADS=64 LOG_LEVEL=warn "$BIN/chatq-api"
start_proc api_keys env REDIS_URL="redis://127.0.0.1:$RPK/0" CHATQ_PREFIX="$PREFIX" PORT="$APK1" \
    HOST=127.0.0.1 API_THREADS=64 LOG_LEVEL=warn API_KEYS_FILE="$TMP/keys" "$BIN/chatq-api"
wait_until "chatq-api (no keys)" 10 api_nokeys http_ok "$APK0" /health
wait_until "chatq-api (keys)" 10 api_keys http_ok "$APK1" /health
K_OFF=() K_ON=() KEYS_NA=""
if ! "$LG" --help 2>&1 | grep -q -- --header; then
    KEYS_NA="n/a (loadgen without --header)"
elif "$BIN/chatq-api" --help 2>&1 | grep -q KEY_RPM; then
    keys_off() {
        redis-cli -p "$RPK" FLUSHALL >/dev/null
        log "keys and quotas, round $i/$KEYS_ROUNDS: POST /chat without keys"
        J=$("$LG" -u "http://127.0.0.1:$APK0" -c "$CONNS" -d "$DUR" -w "$WARM") || true
        lg_check "keys_off_$i" "$J"
        K_OFF+=("$(jget "$J" rps)")
        log "  $(jget "$J" rps) req/s, p99 $(jget "$J" p99_ms) ms"
    }
    keys_on() {
        redis-cli -p "$RPK" FLUSHALL >/dev/null
        log "keys and quotas, round $i/$KEYS_ROUNDS: POST /chat with a key, its quotas on"
        J=$("$LG" -u "http://127.0.0.1:$APK1" -c "$CONNS" -d "$DUR" -w "$WARM" \
            --header "Authorization: Bearer $BENCH_KEY") || true
        lg_check "keys_on_$i" "$J"
        K_ON+=("$(jget "$J" rps)")
        log "  $(jget "$J" rps) req/s, p99 $(jget "$J" p99_ms) ms"
    }
    for ((i = 1; i <= KEYS_ROUNDS; i++)); do
        need api_nokeys api_keys || break
        # Off then on, then on then off: a machine slowing down (or speeding
        # up) through a pair weighs on each side in turn.
        if ((i % 2)); then keys_off && keys_on; else keys_on && keys_off; fi
    done
    QH=$(redis-cli -p "$RPK" --scan --pattern "${PREFIX}quota:*" 2>/dev/null | head -n1)
    [ -z "$QH" ] || log "  the key's quota hash counts $(redis-cli -p "$RPK" HGETALL "$QH" |
        awk 'NR % 2 { f = $0; next } f ~ /^s[0-9]+$/ { n += $0 } END { print n + 0 }') chats in flight"
    [ -n "$QH" ] || note "keys and quotas: no quota hash in Redis: were the quotas on?"
else
    KEYS_NA="n/a (chatq-api without KEY_RPM)"
fi
stop_proc api_keys
stop_proc api_nokeys
stop_proc redis_keys
K_OFF_M=$(echo "${K_OFF[*]:-}" | median)
K_ON_M=$(echo "${K_ON[*]:-}" | median)
# The verdict is the median of each round's on/off: the two sides of a round run
# back to back, while the machine's pace drifts from round to round (a shared
# host: one run saw both sides lose a fifth of their throughput between its
# second and last rounds), which the ratio of the two medians, each taken from
# another round, mistakes for a difference. That ratio is printed too.
K_PAIRS=""
for ((i = 0; i < ${#K_ON[@]} && i < ${#K_OFF[@]}; i++)); do
    K_PAIRS+="$(calc 2 'a/b' "${K_ON[$i]}" "${K_OFF[$i]}") "
done
K_RATIO=$(echo "$K_PAIRS" | median)
K_RATIO_M=$(calc 2 'a/b' "$K_ON_M" "$K_OFF_M")
S="gateway keys and quotas ($CONNS connections; $KEYS_ROUNDS rounds of on and off back to back, the median of their ratios)"
row "$S" "POST /chat, keys + quotas on: requests/s" \
    "$([ -n "$K_ON_M" ] && echo "$K_ON_M req/s" || echo "${KEYS_NA:-n/a}")" \
    "off: $(num "$K_OFF_M") req/s (rounds on: ${K_ON[*]:-}; off: ${K_OFF[*]:-}; each round on/off: ${K_PAIRS% }; ratio of the medians $(num "$K_RATIO_M"))" "$K_RATIO" \
    ">= 0.90 x off" "$(verdict ge "$K_RATIO" 0.90)" api_post_keys_rps "$K_ON_M" "req/s"
log "keys and quotas: on $(num "$K_ON_M") req/s, off $(num "$K_OFF_M") req/s; each round on/off: ${K_PAIRS% }, median $(num "$K_RATIO") (ratio of the medians $(num "$K_RATIO_M"))"

if [ "${BENCH_ONLY:-}" != keys ]; then # the end of the file closes this

# ==== phase 1: floors and the api alone ==================================================
# Each api figure is taken right after its floor, so that a slow spell of the
# machine is less likely to fall on one side of a ratio only.

free_port RP1
start_redis redis1 "$RP1"
log "redis-server $REDIS_VERSION on 127.0.0.1:$RP1 with --save '' --appendonly no (no persistence)"
free_port AP1
api_env() { # redis port, api port
    echo REDIS_URL="redis://127.0.0.1:$1/0" CHATQ_PREFIX="$PREFIX" PORT="$2" HOST=127.0.0.1 \
        API_THREADS=64 LOG_LEVEL=warn
}
# Started now and idle until its turn; alone: no processor, no handler.
# shellcheck disable=SC2046
start_proc api1 env $(api_env "$RP1" "$AP1") "$BIN/chatq-api"
wait_until chatq-api 10 api1 http_ok "$AP1" /health

run_floor() { # mode -> sets FLOOR_PORT, starts floor_<mode>
    free_port FLOOR_PORT
    start_proc "floor_$1" "$BB/floor" --mode "$1" --port "$FLOOR_PORT" --threads 64 \
        --redis-port "$RP1" --prefix "floor:"
    wait_until "floor ($1)" 10 "floor_$1" http_ok "$FLOOR_PORT" /health
}

log "floor (a): bare civetweb, POST /chat, $CONNS connections, ${WARM}s + ${DUR}s"
run_floor bare
FA=$("$LG" -u "http://127.0.0.1:$FLOOR_PORT" -c "$CONNS" -d "$DUR" -w "$WARM") || true
lg_check floor_a "$FA"
stop_proc floor_bare
log "  $(jget "$FA" rps) req/s, p50 $(jget "$FA" p50_ms) ms, p99 $(jget "$FA" p99_ms) ms"

log "floor (b): + one pipelined XADD+HSET per request"
run_floor xadd
FB=$("$LG" -u "http://127.0.0.1:$FLOOR_PORT" -c "$CONNS" -d "$DUR" -w "$WARM") || true
lg_check floor_b "$FB"
log "  $(jget "$FB" rps) req/s, p50 $(jget "$FB" p50_ms) ms, p99 $(jget "$FB" p99_ms) ms"
"$LG" -u "http://127.0.0.1:$FLOOR_PORT" -c "$CONNS" -n 20000 --ids-out "$TMP/floor.ids" \
    >/dev/null || true
FB_PORT=$FLOOR_PORT # kept running: it also takes the api's half-peak rate below

AP="" AH="" AG="" FBH=""
if need api1; then
    log "chatq-api POST /chat: peak"
    AP=$("$LG" -u "http://127.0.0.1:$AP1" -c "$CONNS" -d "$DUR" -w "$WARM") || true
    lg_check api_post "$AP"
    log "  $(jget "$AP" rps) req/s, p50 $(jget "$AP" p50_ms) ms, p99 $(jget "$AP" p99_ms) ms"
fi
HALF=$(calc 0 'a/2' "$(jget "$AP" rps)")
if [ -n "$HALF" ] && [ "$HALF" -gt 0 ] && need api1; then
    log "chatq-api POST /chat at half the peak: $HALF req/s (open loop)"
    AH=$("$LG" -u "http://127.0.0.1:$AP1" -c "$CONNS" -d "$DUR" -w "$WARM" -R "$HALF") || true
    lg_check api_post_half "$AH"
    log "  p50 $(jget "$AH" p50_ms) ms, p99 $(jget "$AH" p99_ms) ms, max $(jget "$AH" max_ms) ms"
    log "floor (b) at the same rate, for reference"
    FBH=$("$LG" -u "http://127.0.0.1:$FB_PORT" -c "$CONNS" -d "$DUR" -w "$WARM" -R "$HALF") || true
    lg_check floor_b_half "$FBH"
    log "  p50 $(jget "$FBH" p50_ms) ms, p99 $(jget "$FBH" p99_ms) ms, max $(jget "$FBH" max_ms) ms"
fi
stop_proc floor_xadd
if need api1; then
    "$LG" -u "http://127.0.0.1:$AP1" -c "$CONNS" -n 20000 --ids-out "$TMP/api.ids" \
        >/dev/null || true
    [ -s "$TMP/api.ids" ] || note "api GET: no trace ids came back from 20000 POSTs"
fi

log "floor (c): + one HGETALL per request (ids written by floor (b))"
run_floor hgetall
FC=$("$LG" -u "http://127.0.0.1:$FLOOR_PORT" -m GET --ids-in "$TMP/floor.ids" -c "$CONNS" \
    -d "$DUR" -w "$WARM" --expect '"status":"processing"') || true
lg_check floor_c "$FC"
[ "$(jget "$FC" matched)" = "$(jget "$FC" requests)" ] ||
    note "floor (c): only $(jget "$FC" matched) of $(jget "$FC" requests) GETs found their hash"
stop_proc floor_hgetall
log "  $(jget "$FC" rps) req/s, p50 $(jget "$FC" p50_ms) ms, p99 $(jget "$FC" p99_ms) ms"

if [ -s "$TMP/api.ids" ] && need api1; then
    log "chatq-api GET /chat/{id}/response, round-robin over 20000 trace ids"
    AG=$("$LG" -u "http://127.0.0.1:$AP1" -m GET --ids-in "$TMP/api.ids" -c "$CONNS" \
        -d "$DUR" -w "$WARM") || true
    lg_check api_get "$AG"
    log "  $(jget "$AG" rps) req/s, p50 $(jget "$AG" p50_ms) ms, p99 $(jget "$AG" p99_ms) ms"
fi
need api1 || true
stop_proc api1
stop_proc redis1

# ---- phase 1 rows
FA_R=$(jget "$FA" rps) FB_R=$(jget "$FB" rps) FC_R=$(jget "$FC" rps)
AP_R=$(jget "$AP" rps) AG_R=$(jget "$AG" rps)
S="HTTP floors (civetweb, 64 threads, keep-alive, $CONNS connections)"
row "$S" "floor (a) bare: POST, read body, fixed reply" "$(num "$FA_R") req/s" \
    "p50 $(ms "$(jget "$FA" p50_ms)"), p99 $(ms "$(jget "$FA" p99_ms)")" "" "" "" floor_a_rps "$FA_R" "req/s"
row "$S" "floor (b) + pipelined XADD+HSET" "$(num "$FB_R") req/s" \
    "p50 $(ms "$(jget "$FB" p50_ms)"), p99 $(ms "$(jget "$FB" p99_ms)")" \
    "$(calc 2 'a/b' "$FB_R" "$FA_R")" "" "" floor_b_rps "$FB_R" "req/s"
row "$S" "floor (c) + HGETALL" "$(num "$FC_R") req/s" \
    "p50 $(ms "$(jget "$FC" p50_ms)"), p99 $(ms "$(jget "$FC" p99_ms)")" \
    "$(calc 2 'a/b' "$FC_R" "$FA_R")" "" "" floor_c_rps "$FC_R" "req/s"

S="chatq-api alone ($CONNS connections; ratio to the floor)"
R=$(calc 2 'a/b' "$AP_R" "$FB_R")
row "$S" "POST /chat: requests/s" "$(num "$AP_R") req/s" "floor (b) $(num "$FB_R")" "$R" \
    ">= 0.75 x floor b" "$(verdict ge "$R" 0.75)" api_post_rps "$AP_R" "req/s"
row "$S" "POST /chat: p50 / p99 at peak" "$(ms "$(jget "$AP" p50_ms)") / $(ms "$(jget "$AP" p99_ms)")" \
    "floor (b) $(ms "$(jget "$FB" p99_ms)") p99" "$(calc 2 'a/b' "$(jget "$AP" p99_ms)" "$(jget "$FB" p99_ms)")" \
    "" "" api_post_p99_ms "$(jget "$AP" p99_ms)" "ms"
AH_P99=$(jget "$AH" p99_ms)
row "$S" "POST /chat: p99 at half the peak (${HALF:-?} req/s)" \
    "$(ms "$AH_P99") (p50 $(ms "$(jget "$AH" p50_ms)"))" \
    "floor (b) same rate: p99 $(ms "$(jget "$FBH" p99_ms)")" \
    "$(calc 2 'a/b' "$AH_P99" "$(jget "$FBH" p99_ms)")" \
    "< 5 ms" "$(verdict lt "$AH_P99" 5)" api_post_half_p99_ms "$AH_P99" "ms"
R=$(calc 2 'a/b' "$AG_R" "$FC_R")
row "$S" "GET /chat/{id}/response: requests/s" "$(num "$AG_R") req/s" "floor (c) $(num "$FC_R")" \
    "$R" ">= 0.8 x floor c" "$(verdict ge "$R" 0.8)" api_get_rps "$AG_R" "req/s"
row "$S" "GET /chat/{id}/response: p50 / p99" \
    "$(ms "$(jget "$AG" p50_ms)") / $(ms "$(jget "$AG" p99_ms)")" \
    "floor (c) $(ms "$(jget "$FC" p99_ms)") p99" "$(calc 2 'a/b' "$(jget "$AG" p99_ms)" "$(jget "$FC" p99_ms)")" \
    "" "" api_get_p99_ms "$(jget "$AG" p99_ms)" "ms"

# ==== phase 2: the whole stack ====================================================================

free_port RP2
free_port FP0
free_port FP1
free_port AP2
start_redis redis "$RP2"
log "whole stack: redis-server on 127.0.0.1:$RP2 (--save '' --appendonly no), prefix $PREFIX"
start_proc fake0 "$BIN/chatq-fake-upstream" --host 127.0.0.1 --port "$FP0" --latency-ms 0 --quiet
start_proc fake1000 "$BIN/chatq-fake-upstream" --host 127.0.0.1 --port "$FP1" --latency-ms 1000 --quiet
wait_until "fake upstream (0 ms)" 10 fake0 http_ok "$FP0" /health
wait_until "fake upstream (1000 ms)" 10 fake1000 http_ok "$FP1" /health
# shellcheck disable=SC2046
start_proc api env $(api_env "$RP2" "$AP2") "$BIN/chatq-api"
wait_until chatq-api 10 api http_ok "$AP2" /health
start_proc handler env REDIS_URL="redis://127.0.0.1:$RP2/0" CHATQ_PREFIX="$PREFIX" \
    LOG_LEVEL=warn "$BIN/chatq-handler"
wait_until chatq-handler 10 handler readers_ok "$RP2" 1

PROC_N=0
# start_processor FAKEPORT [CONCURRENCY [SETTING=value...]]: a fresh processor
# (its default PROCESSOR_CONCURRENCY when none is given; the settings after the
# default ones); sets PROC (its name).
start_processor() {
    [ -z "${PROC:-}" ] || stop_proc "$PROC"
    PROC_N=$((PROC_N + 1))
    PROC="processor$PROC_N"
    local conc=() fport=$1
    [ -z "${2:-}" ] || conc=(PROCESSOR_CONCURRENCY="$2")
    shift $(($# < 2 ? $# : 2))
    start_proc "$PROC" env REDIS_URL="redis://127.0.0.1:$RP2/0" CHATQ_PREFIX="$PREFIX" \
        OPENAI_BASE_URL="http://127.0.0.1:$fport/v1" OPENAI_API_KEY=bench \
        "${conc[@]}" "$@" LOG_LEVEL=warn "$BIN/chatq-processor"
    wait_until chatq-processor 10 "$PROC" readers_ok "$RP2" 2
}
# Idle RSS and the instant-upstream run use the processor's defaults.
start_processor "$FP0"

# Idle: started, ready, no load. The short pause lets lazy start-up work finish.
sleep 1
IDLE_API=$(rss_kb "${PID[api]}") IDLE_PROC=$(rss_kb "${PID[$PROC]}")
IDLE_HANDLER=$(rss_kb "${PID[handler]}") IDLE_FAKE=$(rss_kb "${PID[fake0]}")
IDLE_REDIS=$(rss_kb "${PID[redis]}")
ANON_API=$(anon_kb "${PID[api]}") ANON_PROC=$(anon_kb "${PID[$PROC]}")
ANON_HANDLER=$(anon_kb "${PID[handler]}") ANON_FAKE=$(anon_kb "${PID[fake0]}")
log "idle RSS: api $IDLE_API KiB, processor $IDLE_PROC KiB, handler $IDLE_HANDLER KiB, fake $IDLE_FAKE KiB, redis $IDLE_REDIS KiB"

# e2e_run NAME CHATS FAKEPORT TIMEOUT [loadgen options]: submits CHATS and
# watches them to completion; sets LGJ (loadgen) and WJ (watch) JSON.
e2e_run() {
    local name=$1 n=$2 fport=$3 tmo=$4
    shift 4
    LGJ="" WJ=""
    need api handler redis "$PROC" || return 1
    rm -f "$TMP/ready"
    "$BB/watch" --redis-port "$RP2" --prefix "$PREFIX" --target "$n" --timeout "$tmo" \
        --pid api="${PID[api]}" --pid processor="${PID[$PROC]}" --pid handler="${PID[handler]}" \
        --pid redis="${PID[redis]}" --pid-aux fake="${PID[fake0]}" \
        --pid-aux fake1000="${PID[fake1000]}" --fake-port "$fport" \
        --inflight-pid "${PID[$PROC]}" --ready "$TMP/ready" >"$TMP/$name.watch" &
    local wpid=$! i
    for ((i = 0; i < 100; i++)); do
        [ -e "$TMP/ready" ] || ! kill -0 "$wpid" 2>/dev/null && break
        sleep 0.02
    done
    LGJ=$("$LG" -u "http://127.0.0.1:$AP2" -n "$n" --ids-out "$TMP/$name.ids" --timeout "$tmo" \
        "$@") || true
    wait "$wpid" || true
    WJ=$(cat "$TMP/$name.watch")
    RAW[${name}_watch]=$WJ
    lg_check "$name" "$LGJ"
    if [ "$(jget "$WJ" "done")" != 1 ]; then
        note "$name: not all chats completed within ${tmo}s: $(jget "$WJ" completed) of $n" \
            "(handlers pending $(jget "$WJ" handlers_pending), processors pending $(jget "$WJ" processors_pending))"
        return 1
    fi
    need api handler redis "$PROC" || return 1
}

# ---- end to end, instant upstream
log "end to end, instant upstream: $E2E_N chats as fast as $CONNS connections submit them"
E_RATE="" E_TAIL="" E_CHECK="" E_SUB="" CPU_ALL="" CPU_STACK="" PEAK_STACK="" PEAK_ALL=""
if e2e_run e2e_instant "$E2E_N" "$FP0" 60 -c "$CONNS"; then
    E_START=$(jget "$LGJ" start_unix_ms) E_LAST=$(jget "$LGJ" last_ok_unix_ms)
    E_DONE=$(jget "$WJ" done_unix_ms)
    E_RATE=$(calc 0 'a/((b-c)/1000)' "$E2E_N" "$E_DONE" "$E_START")
    E_TAIL=$(calc 0 'a-b' "$E_DONE" "$E_LAST")
    E_SUB=$(calc 0 'a/((b-c)/1000)' "$E2E_N" "$E_LAST" "$E_START")
    C_API=$(jget "$WJ" cpu_s_api) C_PROC=$(jget "$WJ" cpu_s_processor)
    C_HAND=$(jget "$WJ" cpu_s_handler) C_REDIS=$(jget "$WJ" cpu_s_redis)
    C_FAKE=$(jget "$WJ" cpu_s_fake)
    CPU_STACK=$(calc 3 'a+b+c+d' "$C_API" "$C_PROC" "$C_HAND" "$C_REDIS")
    CPU_ALL=$(calc 3 'a+b' "$CPU_STACK" "$C_FAKE")
    PEAK_STACK=$(jget "$WJ" rss_stack_max_kb)
    PEAK_ALL=$(jget "$WJ" rss_total_max_kb)
    log "  $E_RATE chats/s; last 202 -> last completion $E_TAIL ms; CPU: api $C_API s, processor $C_PROC s, handler $C_HAND s, redis $C_REDIS s, fake $C_FAKE s"
    shuf -n 100 "$TMP/e2e_instant.ids" >"$TMP/sample.ids"
    CK=$("$LG" -u "http://127.0.0.1:$AP2" -m GET --ids-in "$TMP/sample.ids" -n 100 -c 4 \
        --expect '"status":"completed"') || true
    RAW[e2e_check]=$CK
    E_CHECK=$(jget "$CK" matched)
    log "  $E_CHECK of 100 random traces read back as status completed"
fi

# ---- end to end, 1 s upstream
log "end to end, 1 s upstream: $SLOW_N chats, PROCESSOR_CONCURRENCY=$SLOW_CONC"
start_processor "$FP1" "$SLOW_CONC"
sleep 0.5
IDLE_PROC_SLOW=$(rss_kb "${PID[$PROC]}")
curl -fsS -m 2 -X POST -o /dev/null "http://127.0.0.1:$FP1/stats/reset" || note "fake /stats/reset failed"
S_RATE="" S_INF="" S_RSS="" S_RSS_AT="" S_PER=""
if e2e_run e2e_slow "$SLOW_N" "$FP1" 60 -c "$CONNS"; then
    S_START=$(jget "$LGJ" start_unix_ms) S_DONE=$(jget "$WJ" done_unix_ms)
    S_RATE=$(calc 0 'a/((b-c)/1000)' "$SLOW_N" "$S_DONE" "$S_START")
    STATS=$(curl -fsS -m 2 "http://127.0.0.1:$FP1/stats" || true)
    RAW[e2e_slow_fake_stats]=$STATS
    S_INF=$(jget "$STATS" max_in_flight)
    S_RSS=$(jget "$WJ" rss_max_kb_processor)
    S_RSS_AT=$(jget "$WJ" rss_at_inflight_max_kb)
    S_PER=$(calc 2 '(a-b)/c' "$S_RSS" "$IDLE_PROC_SLOW" "$S_INF")
    P=$(jget "$WJ" rss_stack_max_kb)
    [ -z "$P" ] || [ -z "$PEAK_STACK" ] || [ "$P" -le "$PEAK_STACK" ] || PEAK_STACK=$P
    P=$(jget "$WJ" rss_total_max_kb)
    [ -z "$P" ] || [ -z "$PEAK_ALL" ] || [ "$P" -le "$PEAK_ALL" ] || PEAK_ALL=$P
    log "  $S_RATE chats/s; max in flight $S_INF; processor RSS max $S_RSS KiB (idle $IDLE_PROC_SLOW KiB), $S_RSS_AT KiB at the most in flight"
fi

# ---- end to end, 1 s upstream over TLS + HTTP/2
# The same run with nginx between the processor and the fake: what TLS and HTTP/2
# cost, and how many TCP connections carry the calls in flight.
T_RATE="" T_INF="" T_CALLS="" T_CONNS="" T_BUSY="" T_H2="" T_NGX_INF="" T_ONE=""
if [ -n "$TLS_OK" ]; then
    log "end to end, 1 s upstream over TLS + HTTP/2 (nginx): $SLOW_N chats, PROCESSOR_CONCURRENCY=$SLOW_CONC"
    tls_start nginx_slow "$FP1"
    start_processor "$FP1" "$SLOW_CONC" OPENAI_BASE_URL="https://127.0.0.1:$TLS_PORT/v1" \
        UPSTREAM_CA_FILE="$TLS_DIR/ca.pem"
    curl -fsS -m 2 -X POST -o /dev/null "http://127.0.0.1:$FP1/stats/reset" || note "fake /stats/reset failed"
    if e2e_run e2e_slow_tls "$SLOW_N" "$FP1" 60 -c "$CONNS"; then
        T_RATE=$(calc 0 'a/((b-c)/1000)' "$SLOW_N" "$(jget "$WJ" done_unix_ms)" \
            "$(jget "$LGJ" start_unix_ms)")
        STATS=$(curl -fsS -m 2 "http://127.0.0.1:$FP1/stats" || true)
        RAW[e2e_slow_tls_fake_stats]=$STATS
        T_INF=$(jget "$STATS" max_in_flight)
    fi
    need nginx_slow || true
    stop_proc nginx_slow # its log is complete once it has exited
    read -r T_CALLS T_CONNS T_BUSY T_H2 T_NGX_INF T_ONE <<<"$(tls_spread "$TMP/nginx_slow.access.log")" || true
    RAW[e2e_slow_tls_connections]="{\"calls\":${T_CALLS:-null},\"connections\":${T_CONNS:-null},\"busiest\":${T_BUSY:-null},\"http2\":${T_H2:-null},\"in_flight\":${T_NGX_INF:-null},\"single_call\":${T_ONE:-null}}"
    log "  $(num "$T_RATE") chats/s; max in flight $(num "$T_INF"); $(num "$T_CALLS") calls" \
        "($(num "$T_H2") over HTTP/2, up to $(num "$T_NGX_INF") in flight) on $(num "$T_CONNS")" \
        "TCP connections, at most $(num "$T_BUSY") on one, $(num "$T_ONE") with one call only"
fi

# ---- cost growth
GROWTH_ROWS=()
for level in $GROWTH; do
    n=$((level * GROWTH_S))
    log "cost at $level in flight: $n chats at $level/s into the 1 s upstream"
    start_processor "$FP1" "$((level > SLOW_CONC ? level : SLOW_CONC))"
    sleep 0.5
    idle=$(rss_kb "${PID[$PROC]}")
    curl -fsS -m 2 -X POST -o /dev/null "http://127.0.0.1:$FP1/stats/reset" || true
    c=$((level < CONNS ? (level < 8 ? 8 : level) : CONNS))
    g_rate="" g_inf="" g_rss="" g_per=""
    if e2e_run "growth_$level" "$n" "$FP1" $((GROWTH_S + 20)) -c "$c" -R "$level"; then
        g_rate=$(calc 0 '0.8*a/((b-c)/1000)' "$n" "$(jget "$WJ" t90_unix_ms)" "$(jget "$WJ" t10_unix_ms)")
        STATS=$(curl -fsS -m 2 "http://127.0.0.1:$FP1/stats" || true)
        g_inf=$(jget "$STATS" max_in_flight)
        g_rss=$(jget "$WJ" rss_max_kb_processor)
        g_per=$(calc 2 '(a-b)/c' "$g_rss" "$idle" "$g_inf")
        log "  $g_rate completions/s, max in flight $g_inf, processor RSS $g_rss KiB (idle $idle KiB)"
    fi
    GROWTH_ROWS+=("$level|$g_rate|$g_inf|$g_rss|$idle|$g_per")
done
need api handler redis fake0 fake1000 || true

# ---- phase 2 rows
S="end to end, instant upstream ($E2E_N chats, processor defaults)"
row "$S" "completed chats/s" "$(num "$E_RATE") chats/s" "submitted at $(num "$E_SUB")/s" "" \
    ">= 5000/s" "$(verdict ge "$E_RATE" 5000)" e2e_instant_chats_per_s "$E_RATE" "chats/s"
row "$S" "last 202 -> last completion" "$(ms "$E_TAIL")" "" "" "" "" e2e_instant_tail_ms "$E_TAIL" "ms"
row "$S" "random traces read back completed (GET)" "$(num "$E_CHECK") of 100" "" "" "100 of 100" \
    "$(verdict ge "$E_CHECK" 100)" e2e_instant_verified "$E_CHECK" "traces"

S="end to end, 1 s upstream ($SLOW_N chats, PROCESSOR_CONCURRENCY=$SLOW_CONC)"
row "$S" "completed chats/s" "$(num "$S_RATE") chats/s" "" "" ">= 3500/s" \
    "$(verdict ge "$S_RATE" 3500)" e2e_slow_chats_per_s "$S_RATE" "chats/s"
row "$S" "most requests in flight (one processor)" "$(num "$S_INF")" "fake /stats max_in_flight" "" \
    ">= 4000" "$(verdict ge "$S_INF" 4000)" e2e_slow_max_in_flight "$S_INF" "requests"
row "$S" "processor RSS: max / at the most in flight" \
    "$(num "$(calc 1 'a/1024' "$S_RSS")") / $(num "$(calc 1 'a/1024' "$S_RSS_AT")") MiB" \
    "idle $(num "$(calc 1 'a/1024' "$IDLE_PROC_SLOW")") MiB" "" "" "" e2e_slow_processor_rss_kb "$S_RSS" "KiB"
row "$S" "processor memory per request in flight" "$(num "$S_PER") KiB" "(max RSS - idle) / in flight" \
    "" "<= 16 KiB" "$(verdict le "$S_PER" 16)" e2e_slow_kib_per_in_flight "$S_PER" "KiB"
TLS_NA="n/a"
[ -n "$TLS_OK" ] || TLS_NA="n/a (no nginx/openssl)"
tls_na() { [ -n "$1" ] && echo "$1" || echo "$TLS_NA"; }
row "$S" "over TLS + HTTP/2 (nginx): completed chats/s" "$(tls_na "${T_RATE:+$T_RATE chats/s}")" \
    "plain HTTP $(num "$S_RATE")/s; in flight $(num "$T_INF")" "$(calc 2 'a/b' "$T_RATE" "$S_RATE")" \
    "" "" e2e_slow_tls_chats_per_s "$T_RATE" "chats/s"
row "$S" "over TLS: TCP connections / most calls on one" \
    "$(tls_na "$([ -z "$T_CONNS" ] || echo "$T_CONNS / $T_BUSY")")" \
    "$(num "$T_CALLS") calls, up to $(num "$T_NGX_INF") at once; $(num "$T_ONE") conns of 1 call" "" "" "" \
    e2e_slow_tls_connections "$T_CONNS" "connections"

S="whole-stack efficiency (instant run) vs the reference Motia stack"
CPS_STACK=$(calc 0 'a/b' "$E2E_N" "$CPU_STACK")
CPS_ALL=$(calc 0 'a/b' "$E2E_N" "$CPU_ALL")
x() { if [ -n "$1" ]; then echo "${1}x"; fi; }
row "$S" "chats/s" "$(num "$E_RATE")" "Motia ~5" "$(x "$(calc 0 'a/5' "$E_RATE")")" "" "" \
    motia_chats_per_s_ratio "$(calc 1 'a/5' "$E_RATE")" "x"
row "$S" "chats per CPU-second, stack without the fake" "$(num "$CPS_STACK")" "Motia ~2" \
    "$(x "$(calc 0 'a/2' "$CPS_STACK")")" "" "" chats_per_cpu_s_stack "$CPS_STACK" "chats/CPU-s"
row "$S" "chats per CPU-second, with the fake upstream" "$(num "$CPS_ALL")" "Motia ~2" \
    "$(x "$(calc 0 'a/2' "$CPS_ALL")")" "" "" chats_per_cpu_s_all "$CPS_ALL" "chats/CPU-s"
row "$S" "CPU-ms/chat api/processor/handler/redis/fake" \
    "$(calc 3 '1000*a/b' "$C_API" "$E2E_N")/$(calc 3 '1000*a/b' "$C_PROC" "$E2E_N")/$(calc 3 '1000*a/b' "$C_HAND" "$E2E_N")/$(calc 3 '1000*a/b' "$C_REDIS" "$E2E_N")/$(calc 3 '1000*a/b' "$C_FAKE" "$E2E_N")" \
    "Motia ~500 in all" "" "" "" cpu_ms_per_chat_stack "$(calc 3 '1000*a/b' "$CPU_STACK" "$E2E_N")" "ms"
row "$S" "peak RSS under load: redis+api+processor+handler" \
    "$(num "$(calc 1 'a/1024' "$PEAK_STACK")") MiB" "Motia > 2048 MiB" \
    "$(x "$(calc 0 '2097152/a' "$PEAK_STACK")") less" "" "" peak_rss_stack_kb "$PEAK_STACK" "KiB"
row "$S" "peak RSS under load, with the fake upstreams" "$(num "$(calc 1 'a/1024' "$PEAK_ALL")") MiB" \
    "" "" "" "" peak_rss_all_kb "$PEAK_ALL" "KiB"

S="cost growth (1 s upstream, in flight set by the submission rate)"
for g in "${GROWTH_ROWS[@]}"; do
    IFS='|' read -r level g_rate g_inf g_rss idle g_per <<<"$g"
    v="n/a"
    [ -z "$g_rate" ] || v="$g_rate/s, $(num "$(calc 1 'a/1024' "$g_rss")") MiB, $(num "$g_per") KiB"
    row "$S" "$level/s for ${GROWTH_S}s: completions/s, RSS, per req" "$v" \
        "in flight $(num "$g_inf"), idle $(num "$(calc 1 'a/1024' "$idle")") MiB" "" \
        "<= 16 KiB/req" "$(verdict le "$g_per" 16)" "growth_${level}_kib_per_in_flight" "$g_per" "KiB"
done

S="idle RSS (started, no load yet; default settings)"
for b in "api:$IDLE_API:$ANON_API" "processor:$IDLE_PROC:$ANON_PROC" \
    "handler:$IDLE_HANDLER:$ANON_HANDLER" "fake-upstream:$IDLE_FAKE:$ANON_FAKE"; do
    IFS=: read -r n v a <<<"$b"
    row "$S" "chatq-$n" "$(num "$(calc 1 'a/1024' "$v")") MiB" \
        "private (RssAnon) $(num "$(calc 1 'a/1024' "$a")") MiB" "" "<= 10 MiB" \
        "$(verdict le "$v" 10240)" "idle_rss_kb_$n" "$v" "KiB"
done
row "$S" "redis-server (for reference)" "$(num "$(calc 1 'a/1024' "$IDLE_REDIS")") MiB" "" "" "" "" \
    idle_rss_kb_redis "$IDLE_REDIS" "KiB"

# ==== phase 3: rate limits (burst) ===============================================================
# A burst of 20 x R chats against an upstream that allows R requests per second,
# on a fresh redis-server so that the parked-chat sampler scans only this run's
# keys. Twice: processors with their defaults (pacing off), then with the shared
# upstream budget (pacing on), when this chatq-processor has it.

need api handler redis fake0 fake1000 || true
[ -z "${PROC:-}" ] || stop_proc "$PROC"
for n in api handler fake0 fake1000 redis; do stop_proc "$n"; done
PROC=""

free_port RP3
free_port FP3
free_port AP3
RL_PREFIX="chatq-bench-rl:"
start_redis redis3 "$RP3"
start_proc fake_rl "$BIN/chatq-fake-upstream" --host 127.0.0.1 --port "$FP3" --latency-ms 0 \
    --rpm "$RL_R" --limit-window-ms 1000 --quiet
wait_until "fake upstream (--rpm $RL_R --limit-window-ms 1000)" 10 fake_rl http_ok "$FP3" /health
# shellcheck disable=SC2046
start_proc api3 env $(api_env "$RP3" "$AP3") CHATQ_PREFIX="$RL_PREFIX" "$BIN/chatq-api"
wait_until chatq-api 10 api3 http_ok "$AP3" /health
start_proc handler3 env REDIS_URL="redis://127.0.0.1:$RP3/0" CHATQ_PREFIX="$RL_PREFIX" \
    LOG_LEVEL=warn "$BIN/chatq-handler"
wait_until chatq-handler 10 handler3 readers_ok "$RP3" 1

# Parked chats: the delayed set plus every wait:* list, one script per sample;
# -1 while none of those keys exists.
RL_PARK_LUA="local n, seen = 0, 0
if redis.call('TYPE', KEYS[1]).ok == 'zset' then seen = 1; n = redis.call('ZCARD', KEYS[1]) end
local cur = '0'
repeat
  local r = redis.call('SCAN', cur, 'MATCH', ARGV[1], 'COUNT', 1000)
  cur = r[1]
  for _, k in ipairs(r[2]) do
    if redis.call('TYPE', k).ok == 'list' then seen = 1; n = n + redis.call('LLEN', k) end
  end
until cur == '0'
if seen == 0 then return -1 end
return n"
# rl_sample_parked OUTFILE STOPFILE: every 200 ms until STOPFILE exists; writes the
# peak, or nothing when no parking key was ever seen.
rl_sample_parked() {
    local peak=-1 v
    while [ ! -e "$2" ]; do
        v=$(redis-cli -p "$RP3" EVAL "$RL_PARK_LUA" 1 "${RL_PREFIX}delayed" "${RL_PREFIX}wait:*" \
            2>/dev/null) || v=-1
        [[ $v =~ ^-?[0-9]+$ ]] && [ "$v" -gt "$peak" ] && peak=$v
        sleep 0.2
    done
    [ "$peak" -lt 0 ] || echo "$peak" >"$1"
}

# rl_run NAME [SETTING=value...]: three processors with the settings, the burst,
# its ledger. Sets RL_DONE RL_FAILED RL_SHARE RL_RATE RL_RATIO RL_PARKED (empty when
# not measured) and RAW[NAME].
rl_run() {
    local name=$1 i
    shift
    RL_DONE="" RL_FAILED="" RL_SHARE="" RL_RATE="" RL_RATIO="" RL_PARKED=""
    curl -fsS -m 2 -X POST -o /dev/null "http://127.0.0.1:$FP3/stats/reset" ||
        note "$name: fake /stats/reset failed"
    for i in 1 2 3; do
        start_proc "${name}_processor$i" env REDIS_URL="redis://127.0.0.1:$RP3/0" \
            CHATQ_PREFIX="$RL_PREFIX" OPENAI_BASE_URL="http://127.0.0.1:$FP3/v1" \
            OPENAI_API_KEY=bench "$@" LOG_LEVEL=warn "$BIN/chatq-processor"
    done
    # Not wait_until: a processor that waits for work some other way is no reason
    # to stop the bench; the chats tell.
    for ((i = 0; i < 200; i++)); do
        readers_ok "$RP3" 4 && break
        sleep 0.05
    done
    if ! need api3 handler3 redis3 fake_rl "${name}_processor1" "${name}_processor2" \
        "${name}_processor3"; then
        for i in 1 2 3; do stop_proc "${name}_processor$i"; done
        return 1
    fi
    rm -f "$TMP/ready" "$TMP/$name.stop" "$TMP/$name.parked"
    "$BB/watch" --redis-port "$RP3" --prefix "$RL_PREFIX" --target "$RL_N" \
        --timeout "$RL_TIMEOUT" --ready "$TMP/ready" >"$TMP/$name.watch" &
    local wpid=$!
    for ((i = 0; i < 100; i++)); do
        [ -e "$TMP/ready" ] || ! kill -0 "$wpid" 2>/dev/null && break
        sleep 0.02
    done
    rl_sample_parked "$TMP/$name.parked" "$TMP/$name.stop" &
    local spid=$!
    local lgj wj stats ck
    lgj=$("$LG" -u "http://127.0.0.1:$AP3" -n "$RL_N" -c "$CONNS" --ids-out "$TMP/$name.ids" \
        --timeout "$RL_TIMEOUT") || true
    wait "$wpid" || true
    touch "$TMP/$name.stop"
    wait "$spid" || true
    wj=$(cat "$TMP/$name.watch")
    lg_check "$name" "$lgj"
    [ "$(jget "$wj" "done")" = 1 ] ||
        note "$name: not all chats ended within ${RL_TIMEOUT}s: $(jget "$wj" completed) of $RL_N"
    stats=$(curl -fsS -m 2 "http://127.0.0.1:$FP3/stats" || true)
    if [ -s "$TMP/$name.ids" ]; then
        ck=$("$LG" -u "http://127.0.0.1:$AP3" -m GET --ids-in "$TMP/$name.ids" -n "$RL_N" \
            -c 8 --expect '"status":"completed"') || true
        RL_DONE=$(jget "$ck" matched)
        ck=$("$LG" -u "http://127.0.0.1:$AP3" -m GET --ids-in "$TMP/$name.ids" -n "$RL_N" \
            -c 8 --expect '"status":"failed"') || true
        RL_FAILED=$(jget "$ck" matched)
    fi
    RL_SHARE=$(calc 2 '100*a/b' "$(jget "$stats" rate_limited)" "$(jget "$stats" requests)")
    RL_RATE=$(calc 1 'a/((b-c)/1000)' "$RL_DONE" "$(jget "$wj" done_unix_ms)" \
        "$(jget "$lgj" start_unix_ms)")
    [ "$(jget "$wj" "done")" = 1 ] || RL_RATE=""
    RL_RATIO=$(calc 2 'a/b' "$RL_RATE" "$RL_R")
    [ ! -s "$TMP/$name.parked" ] || RL_PARKED=$(cat "$TMP/$name.parked")
    RAW[$name]="{\"completed\":${RL_DONE:-null},\"failed\":${RL_FAILED:-null},\"chats_per_s\":${RL_RATE:-null},\"parked_peak\":${RL_PARKED:-null},\"fake_stats\":${stats:-null},\"watch\":${wj:-null}}"
    log "  completed $(num "$RL_DONE"), failed $(num "$RL_FAILED"); 429s $(num "$RL_SHARE") % of" \
        "$(num "$(jget "$stats" requests)") upstream answers; $(num "$RL_RATE") completions/s" \
        "($(num "$RL_RATIO") x R; fake max_rps_seen $(num "$(jget "$stats" max_rps_seen)"));" \
        "peak parked $(num "$RL_PARKED")"
    need "${name}_processor1" "${name}_processor2" "${name}_processor3" || true
    for i in 1 2 3; do stop_proc "${name}_processor$i"; done
}

log "rate limits (burst): $RL_N chats at once, upstream $RL_R req/s, 3 processors, pacing off"
rl_run ratelimit_off || true
OFF_DONE=$RL_DONE OFF_FAILED=$RL_FAILED OFF_SHARE=$RL_SHARE OFF_RATE=$RL_RATE
OFF_RATIO=$RL_RATIO OFF_PARKED=$RL_PARKED
ON_DONE="" ON_FAILED="" ON_SHARE="" ON_RATE="" ON_RATIO="" ON_PARKED="" ON_NA="n/a"
TON_DONE="" TON_FAILED="" TON_SHARE="" TON_RATE="" TON_RATIO=""
TON_CALLS="" TON_CONNS="" TON_BUSY="" TON_H2="" TON_INF="" TON_ONE=""
# Pacing is switched on by settings this processor may not have yet: it ignores
# unknown environment variables, so a run would only repeat "pacing off".
if "$BIN/chatq-processor" --help 2>&1 | grep -q UPSTREAM_RPM; then
    log "rate limits (burst): the same with UPSTREAM_RPM=$((RL_R * 60)) UPSTREAM_BURST_MS=1000 (pacing on)"
    if rl_run ratelimit_on UPSTREAM_RPM=$((RL_R * 60)) UPSTREAM_BURST_MS=1000; then :; fi
    ON_DONE=$RL_DONE ON_FAILED=$RL_FAILED ON_SHARE=$RL_SHARE ON_RATE=$RL_RATE
    ON_RATIO=$RL_RATIO ON_PARKED=$RL_PARKED
    if [ -n "$TLS_OK" ]; then
        log "rate limits (burst): pacing on, over TLS + HTTP/2 (nginx in front of the fake)"
        tls_start nginx_rl "$FP3"
        if rl_run ratelimit_on_tls UPSTREAM_RPM=$((RL_R * 60)) UPSTREAM_BURST_MS=1000 \
            OPENAI_BASE_URL="https://127.0.0.1:$TLS_PORT/v1" UPSTREAM_CA_FILE="$TLS_DIR/ca.pem"; then :; fi
        TON_DONE=$RL_DONE TON_FAILED=$RL_FAILED TON_SHARE=$RL_SHARE TON_RATE=$RL_RATE
        TON_RATIO=$RL_RATIO
        need nginx_rl || true
        stop_proc nginx_rl # its log is complete once it has exited
        read -r TON_CALLS TON_CONNS TON_BUSY TON_H2 TON_INF TON_ONE \
            <<<"$(tls_spread "$TMP/nginx_rl.access.log")" || true
        RAW[ratelimit_on_tls_connections]="{\"calls\":${TON_CALLS:-null},\"connections\":${TON_CONNS:-null},\"busiest\":${TON_BUSY:-null},\"http2\":${TON_H2:-null},\"in_flight\":${TON_INF:-null},\"single_call\":${TON_ONE:-null}}"
        log "  $(num "$TON_CALLS") calls ($(num "$TON_H2") over HTTP/2, up to $(num "$TON_INF")" \
            "in flight) on $(num "$TON_CONNS") TCP connections, at most $(num "$TON_BUSY") on one"
    fi
else
    ON_NA="n/a (not built)"
    log "rate limits (burst): pacing on: n/a, $BIN/chatq-processor --help lists no UPSTREAM_RPM"
fi
need api3 handler3 redis3 fake_rl || true

# ---- phase 3 rows
S="rate limits (burst): $RL_N chats at once, upstream $RL_R req/s, 3 processors; value: pacing on"
na() { [ -n "$1" ] && echo "$1" || echo "$ON_NA"; }
pair() { [ -n "$1" ] && [ -n "$2" ] && echo "$1 / $2"; }
ALL_OK=""
[ -z "$ON_DONE" ] || ALL_OK=$(awk -v d="$ON_DONE" -v n="$RL_N" 'BEGIN { print (d == n) ? 1 : 0 }')
row "$S" "completed / failed" "$(na "$(pair "$ON_DONE" "$ON_FAILED")")" \
    "pacing off: $(num "$(pair "$OFF_DONE" "$OFF_FAILED")")" "" "$RL_N / 0" \
    "$(verdict ge "$ALL_OK" 1)" ratelimit_on_completed "$ON_DONE" "chats"
row "$S" "429 share of upstream answers" "$(na "${ON_SHARE:+$ON_SHARE %}")" \
    "pacing off: $(num "${OFF_SHARE:+$OFF_SHARE %}")" "" "< 2 %" "$(verdict lt "$ON_SHARE" 2)" \
    ratelimit_on_429_pct "$ON_SHARE" "%"
IN_RANGE=""
[ -z "$ON_RATIO" ] || IN_RANGE=$(awk -v r="$ON_RATIO" 'BEGIN { print (r >= 0.9 && r <= 1.1) ? 1 : 0 }')
row "$S" "completions/s, first POST -> last completion" "$(na "${ON_RATE:+$ON_RATE/s}")" \
    "pacing off: $(num "${OFF_RATE:+$OFF_RATE/s}") ($(num "$OFF_RATIO")x R)" \
    "${ON_RATIO:+${ON_RATIO}x R}" "0.9-1.1 x R" "$(verdict ge "$IN_RANGE" 1)" \
    ratelimit_on_chats_per_s "$ON_RATE" "chats/s"
row "$S" "peak parked chats (delayed + wait:*)" "$(na "$ON_PARKED")" \
    "pacing off: $(num "$OFF_PARKED")" "" "" "" ratelimit_on_parked_peak "$ON_PARKED" "chats"
# Over TLS: the same targets; the value says completed / failed and the 429 share.
TON_OK=""
[ -z "$TON_DONE" ] || TON_OK=$(awk -v d="$TON_DONE" -v n="$RL_N" -v s="${TON_SHARE:-100}" \
    -v r="${TON_RATIO:-0}" 'BEGIN { print (d == n && s < 2 && r >= 0.9 && r <= 1.1) ? 1 : 0 }')
TON_NA=$ON_NA
[ -n "$TLS_OK" ] || TON_NA="n/a (no nginx/openssl)"
row "$S" "over TLS+HTTP/2: chats/s (done/failed, 429s)" \
    "$([ -n "$TON_RATE" ] && echo "$TON_RATE/s ($(num "$(pair "$TON_DONE" "$TON_FAILED")"), $(num "$TON_SHARE") %)" || echo "$TON_NA")" \
    "plain HTTP: $(num "${ON_RATE:+$ON_RATE/s}")" "${TON_RATIO:+${TON_RATIO}x R}" \
    "all, < 2 %, 0.9-1.1 x R" "$(verdict ge "$TON_OK" 1)" ratelimit_on_tls_chats_per_s "$TON_RATE" "chats/s"
row "$S" "over TLS: TCP connections / most calls on one" \
    "$([ -n "$TON_CONNS" ] && echo "$TON_CONNS / $TON_BUSY" || echo "$TON_NA")" \
    "$(num "$TON_CALLS") calls, up to $(num "$TON_INF") at once; $(num "$TON_ONE") conns of 1 call" "" "" "" \
    ratelimit_on_tls_connections "$TON_CONNS" "connections"

# ==== phase 5: waiting clients ====================================================================
# One api alone on a fresh redis-server, first without wait threads (its RSS, the
# reference of the memory per waiting client), then with WAIT_THREADS=$WAIT_N: POST
# /chat without waiters, WAIT_N long-polls held open on as many chats (records made
# here with status processing, as the api's intake makes them), POST /chat again
# with them all waiting, then every chat completed at once.

WAIT_N=${BENCH_WAITERS:-10000}
W_HELD="" W_POST0="" W_POST="" W_CPU0="" W_CPU="" W_PER="" W_CONNS="" W_DONE="" W_REL_MS="" W_RSS0="" W_RSSI="" W_RSSW=""
free_port RP5
start_redis redis5 "$RP5"
free_port AP5
wait_api_env() { # wait threads
    echo REDIS_URL="redis://127.0.0.1:$RP5/0" CHATQ_PREFIX="$PREFIX" PORT="$AP5" HOST=127.0.0.1 \
        API_THREADS=64 LOG_LEVEL=warn WAIT_THREADS="$1" WAIT_MAX_SECONDS=300
}
# shellcheck disable=SC2046
start_proc api5a env $(wait_api_env 0) "$BIN/chatq-api"
wait_until chatq-api 10 api5a http_ok "$AP5" /health
W_RSS0=$(rss_kb "${PID[api5a]}")
stop_proc api5a
log "waiting clients: chatq-api with WAIT_THREADS=$WAIT_N ($((WAIT_N + 64)) threads)"
# shellcheck disable=SC2046
start_proc api5 env $(wait_api_env "$WAIT_N") "$BIN/chatq-api"
wait_until chatq-api 120 api5 http_ok "$AP5" /health
W_RSSI=$(rss_kb "${PID[api5]}")
log "  RSS $(calc 1 'a/1024' "$W_RSS0") MiB without wait threads, $(calc 1 'a/1024' "$W_RSSI") MiB with them, idle"
# wait_post NAME: POST /chat at its peak twice; sets WP_RPS (the better run) and
# WP_CPU (the api's CPU-microseconds per request over both), which a busy machine
# moves less than the rate.
wait_post() {
    local pid=${PID[api5]} t0 t1 j best="" n=0 k
    t0=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    for k in 1 2; do
        j=$("$LG" -u "http://127.0.0.1:$AP5" -c "$CONNS" -d "$DUR" -w "$WARM") || true
        lg_check "$1_$k" "$j"
        n=$((n + $(jget "$j" requests) + 0))
        if [ -z "$best" ] || awk -v a="$(jget "$j" rps)" -v b="$best" 'BEGIN { exit !(a > b) }'; then
            best=$(jget "$j" rps)
        fi
    done
    t1=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    WP_RPS=$best
    # Warm-up requests are not counted in "requests": a slight overestimate, alike
    # in both states.
    WP_CPU=$(calc 1 '(b-a)*1000000/c/d' "$t0" "$t1" "$(getconf CLK_TCK)" "$n")
}
wait_post wait_post0
W_POST0=$WP_RPS W_CPU0=$WP_CPU
log "  POST /chat without waiters: $W_POST0 req/s (best of 2), $W_CPU0 CPU-us/request"
awk -v n="$WAIT_N" 'BEGIN { srand(12); for (i = 0; i < n; i++) { s = ""
    for (j = 0; j < 32; j++) s = s sprintf("%x", int(rand() * 16))
    printf "%s-%s-4%s-a%s-%s\n", substr(s, 1, 8), substr(s, 9, 4), substr(s, 14, 3),
        substr(s, 18, 3), substr(s, 21, 12) } }' >"$TMP/wait.ids"
awk -v p="$PREFIX" '{ print "HSET " p "trace:" $1 " status processing"; print "SADD bench:waitset " $1 }' \
    "$TMP/wait.ids" | redis-cli -p "$RP5" >/dev/null
start_proc waiters "$BB/waiters" --port "$AP5" --ids "$TMP/wait.ids" --n "$WAIT_N" --wait 240 \
    --timeout 280 --ready "$TMP/wait.ready" --release "$TMP/wait.release"
wait_until "$WAIT_N waiting clients" 200 waiters test -e "$TMP/wait.ready"
# Sent is not yet waiting: each is waiting once the api subscribed to its chat.
# Until all are, or the count stood still for 5 s (a client answered with an error
# never will be).
held() { redis-cli -p "$RP5" PUBSUB CHANNELS "${PREFIX}events:*" | wc -l; }
W_PREV=-1 W_SAME=0
for _ in $(seq 1 240); do
    W_HELD=$(held)
    [ "$W_HELD" -ge "$WAIT_N" ] && break
    if [ "$W_HELD" = "$W_PREV" ]; then W_SAME=$((W_SAME + 1)); else W_SAME=0; fi
    [ "$W_SAME" -ge 10 ] && break
    W_PREV=$W_HELD
    sleep 0.5
done
sleep 1
W_HELD=$(held)
W_CONNS=$(redis-cli -p "$RP5" CLIENT LIST | grep -c "cmd=" || true)
W_RSSW=$(rss_kb "${PID[api5]}")
W_PER=$(calc 1 '(a-b)/c' "$W_RSSW" "$W_RSS0" "$WAIT_N")
log "  $W_HELD clients wait (subscribed); RSS $(calc 1 'a/1024' "$W_RSSW") MiB, $W_PER KiB each; $W_CONNS Redis connections in all"
wait_post wait_post
W_POST=$WP_RPS W_CPU=$WP_CPU
log "  POST /chat with them waiting: $W_POST req/s (best of 2), $W_CPU CPU-us/request"
redis-cli -p "$RP5" EVAL "for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    redis.call('HSET', ARGV[1] .. 'trace:' .. id, 'status', 'completed')
    redis.call('PUBLISH', ARGV[1] .. 'events:' .. id, 'completed') end return 1" \
    1 bench:waitset "$PREFIX" >/dev/null
touch "$TMP/wait.release"
for _ in $(seq 1 1200); do alive waiters || break; sleep 0.1; done
WJ=$(cat "$TMP/waiters.log")
RAW[waiters]=$WJ
W_DONE=$(jget "$WJ" completed)
W_REL_MS=$(jget "$WJ" release_ms)
[ "$(jget "$WJ" errors)" = 0 ] || note "waiting clients: $(jget "$WJ" errors) connections failed"
[ "$(jget "$WJ" early)" = 0 ] || note "waiting clients: $(jget "$WJ" early) answered processing before their chat completed"
log "  released: $W_DONE completed answers, the last $W_REL_MS ms after"
stop_proc waiters
stop_proc api5
stop_proc redis5

S="waiting clients (long-poll ?wait=, one api, WAIT_THREADS=$WAIT_N)"
row "$S" "clients waiting at once" "$(num "$W_HELD") of $WAIT_N" \
    "$(num "$W_CONNS") Redis connections in all" "" ">= 10000" "$(verdict ge "$W_HELD" 10000)" \
    waiting_clients "$W_HELD" "clients"
W_RATIO=$(calc 2 'a/b' "$W_POST" "$W_POST0")
row "$S" "POST /chat, $CONNS conns, best of 2, with them waiting" "$(num "$W_POST") req/s" \
    "without: $(num "$W_POST0") req/s" "$W_RATIO" ">= 0.9" "$(verdict ge "$W_RATIO" 0.9)" \
    waiting_post_rps "$W_POST" "req/s"
W_CPU_RATIO=$(calc 2 'a/b' "$W_CPU" "$W_CPU0")
row "$S" "api CPU per POST, with them waiting" "$(num "$W_CPU") us" "without: $(num "$W_CPU0") us" \
    "$W_CPU_RATIO" "" "" waiting_post_cpu_us "$W_CPU" "us"
row "$S" "memory per waiting client" "$(num "$W_PER") KiB" \
    "api RSS $(num "$(calc 1 'a/1024' "$W_RSS0")") MiB / idle $(num "$(calc 1 'a/1024' "$W_RSSI")") / waiting $(num "$(calc 1 'a/1024' "$W_RSSW")")" \
    "" "" "" waiting_kib_per_client "$W_PER" "KiB"
row "$S" "all completed at once: answered, last after" \
    "$(num "$W_DONE") of $WAIT_N, $(ms "$W_REL_MS")" "HSET + PUBLISH of each" "" "all" \
    "$(verdict ge "$W_DONE" "$WAIT_N")" waiting_release_ms "$W_REL_MS" "ms"
fi # BENCH_ONLY

# ==== output ====================================================================================

ELAPSED=$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.0f", b-a}')
{
    echo "chatq bench, $STAMP ($ELAPSED s)"
    echo "machine: $NPROC x $CPU, $(calc 1 'a/1048576' "$MEM_KB") GiB RAM, $KERNEL, load average before: $LOADAVG"
    echo "redis-server $REDIS_VERSION, started with --save '' --appendonly no (no persistence);" \
        "load from $BB/loadgen on 127.0.0.1"
    last=""
    fmt='%-50s %-30s %-34s %-7s %-18s %s\n'
    for r in "${ROWS[@]}"; do
        IFS='|' read -r sec metric val ref ratio target result _ <<<"$r"
        if [ "$sec" != "$last" ]; then
            echo
            echo "== $sec"
            # shellcheck disable=SC2059
            printf "$fmt" "metric" "value" "reference" "ratio" "target" "result"
            last=$sec
        fi
        # shellcheck disable=SC2059
        printf "$fmt" "$metric" "$val" "${ref:--}" "${ratio:--}" "${target:--}" "${result:--}"
    done
    echo
    pass=$(printf '%s\n' "${ROWS[@]}" | awk -F'|' '$7 == "PASS"' | wc -l)
    fail=$(printf '%s\n' "${ROWS[@]}" | awk -F'|' '$7 == "FAIL"' | wc -l)
    na=$(printf '%s\n' "${ROWS[@]}" | awk -F'|' '$7 == "n/a"' | wc -l)
    echo "targets: $pass PASS, $fail FAIL, $na n/a"
    if [ ${#NOTES[@]} -gt 0 ]; then
        echo "notes:"
        printf '  - %s\n' "${NOTES[@]}"
    fi
} | tee "$TMP/table.txt"

{
    printf '{"timestamp":%s,"elapsed_s":%s,' "$(json_str "$STAMP")" "$ELAPSED"
    printf '"machine":{"nproc":%s,"cpu":%s,"mem_kb":%s,"kernel":%s,"loadavg_before":%s},' \
        "$NPROC" "$(json_str "$CPU")" "$MEM_KB" "$(json_str "$KERNEL")" "$(json_str "$LOADAVG")"
    printf '"redis":{"version":%s,"persistence":"none (--save '"''"' --appendonly no)"},' \
        "$(json_str "$REDIS_VERSION")"
    printf '"settings":{"connections":%s,"duration_s":%s,"warmup_s":%s,"e2e_chats":%s,' \
        "$CONNS" "$DUR" "$WARM" "$E2E_N"
    printf '"slow_chats":%s,"slow_concurrency":%s,"growth":%s,"growth_seconds":%s,' \
        "$SLOW_N" "$SLOW_CONC" "$(json_str "$GROWTH")" "$GROWTH_S"
    printf '"rl_rate":%s,"rl_chats":%s},' "$RL_R" "$RL_N"
    printf '"rows":['
    sep=""
    for r in "${ROWS[@]}"; do
        IFS='|' read -r sec metric val ref ratio target result key number unit <<<"$r"
        printf '%s{"section":%s,"key":%s,"metric":%s,"value":%s,"unit":%s,"text":%s,' "$sep" \
            "$(json_str "$sec")" "$(json_str "$key")" "$(json_str "$metric")" \
            "${number:-null}" "$(json_str "$unit")" "$(json_str "$val")"
        rnum=${ratio%% *}
        rnum=${rnum%x}
        [[ $rnum =~ ^[0-9]+([.][0-9]+)?$ ]] || rnum=null
        printf '"reference":%s,"ratio":%s,"ratio_text":%s,"target":%s,"result":%s}' \
            "$(json_str "$ref")" "$rnum" "$(json_str "$ratio")" "$(json_str "$target")" \
            "$(json_str "$result")"
        sep=","
    done
    printf '],"notes":['
    sep=""
    for n in "${NOTES[@]}"; do
        printf '%s%s' "$sep" "$(json_str "$n")"
        sep=","
    done
    printf '],"raw":{'
    sep=""
    for k in "${!RAW[@]}"; do
        [ -n "${RAW[$k]}" ] || continue
        printf '%s%s:%s' "$sep" "$(json_str "$k")" "${RAW[$k]}"
        sep=","
    done
    printf '}}\n'
} >"$OUT/results-$STAMP.json"
cp "$OUT/results-$STAMP.json" "$OUT/latest.json"
log "wrote $OUT/results-$STAMP.json and $OUT/latest.json"
