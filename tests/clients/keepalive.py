#!/usr/bin/env python3
"""keepalive.py - POST /chat the way Python applications do: requests (a Session
per thread, keep-alive) or httpx (one Client with a connection pool), many
requests at once, with pauses between them that land where a server's idle
timeout may close a connection the client is about to reuse. Prints one JSON
line: {"client", "sent", "accepted", "failures": {...}}.

    python3 keepalive.py requests|httpx URL [CONNECTIONS] [ROUNDS] [KEY]

Exits 0 when every POST got a 202, 1 otherwise."""
import collections
import json
import sys
import threading
import time

# Neither requests nor httpx reads the server's Keep-Alive hint: an idle gap of
# exactly the server's timeout races its close whatever the server does (an
# application that must not lose such a POST retries it with an Idempotency-Key).
# So the gaps here stay clear of 10 s, chatq's default: below it the connection
# must still be open; past it the client must see it closed and open another.
PAUSES = [0, 0, 0.45, 0.5, 0.55, 3.9, 4.5, 5.5, 6.5, 11.0]


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    kind, url = sys.argv[1], sys.argv[2]
    conns = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    key = sys.argv[5] if len(sys.argv) > 5 else ""
    headers = {"Authorization": "Bearer " + key} if key else {}
    lock = threading.Lock()
    failures = collections.Counter()
    counts = {"sent": 0, "accepted": 0}

    if kind == "httpx":
        import httpx

        shared = httpx.Client(
            limits=httpx.Limits(max_connections=conns, max_keepalive_connections=conns),
            timeout=30.0)
        post = shared.post
    else:
        import requests

        local = threading.local()

        def post(u, **kw):
            if not hasattr(local, "session"):
                local.session = requests.Session()
            return local.session.post(u, timeout=30, **kw)

    def worker(i):
        for r in range(rounds):
            with lock:
                counts["sent"] += 1
            try:
                res = post(url + "/chat", headers=headers,
                           json={"message": "python %s %d.%d" % (kind, i, r),
                                 "model": "gpt-4o-mini"})
                why = None if res.status_code == 202 else "status %d" % res.status_code
            except Exception as e:  # a dropped connection, a reset, a timeout
                why = type(e).__name__ + ": " + str(e)[:80]
            with lock:
                if why is None:
                    counts["accepted"] += 1
                else:
                    failures[why] += 1
            time.sleep(PAUSES[(i * 7 + r * 3) % len(PAUSES)])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"client": "python-" + kind, "sent": counts["sent"],
                      "accepted": counts["accepted"], "failures": failures}))
    return 0 if counts["accepted"] == counts["sent"] else 1


if __name__ == "__main__":
    sys.exit(main())
