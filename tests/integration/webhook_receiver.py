#!/usr/bin/env python3
"""A webhook receiver for the integration tests (group "webhooks").

It verifies every delivery's signature with the verify() function of the
README's "### Webhooks" Python example, taken from README.md itself, so the
example a user copies is the code the tests run. Each request is logged as one
JSON line (a "start" line when it arrives, an "end" line with the status
answered) into the log file; the path picks the behaviour:

  /ok      200
  /fail3   500 to the first 3 deliveries of each webhook-id, then 200
  /fail    500 always
  /gone    410
  /slow    200 after SLOW_S seconds

usage: webhook_receiver.py README SECRET PORT_FILE LOG_FILE
"""
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOW_S = 2.0


def readme_verify(path):
    """The verify() of the README's Python receiver."""
    text = open(path, encoding="utf-8").read()
    section = text[text.index("### Webhooks"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {"__name__": "readme_example"}
    exec(code, namespace)
    return namespace["verify"]


def main():
    readme, secret, port_file, log_file = sys.argv[1:5]
    verify = readme_verify(readme)
    # The check must be able to fail: a wrong signature and a stale timestamp.
    now = str(int(time.time()))
    bad = {"webhook-id": "msg_x", "webhook-timestamp": now,
           "webhook-signature": "v1,AAAA"}
    if verify(secret, bad, b"{}"):
        sys.exit("verify() accepted a wrong signature")
    lock = threading.Lock()
    seen = {}
    log = open(log_file, "a", buffering=1, encoding="utf-8")

    def record(**kw):
        kw["t"] = time.time()
        with lock:
            log.write(json.dumps(kw) + "\n")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            hid = self.headers.get("webhook-id", "")
            try:
                ok = verify(secret, self.headers, body)
            except Exception as e:  # a missing header, a malformed secret
                ok = False
                record(phase="error", error=repr(e))
            try:
                event = json.loads(body)
            except ValueError:
                event = {}
            info = dict(path=self.path, id=hid,
                        ts=self.headers.get("webhook-timestamp", ""),
                        sig=ok, type=event.get("type"), event_id=event.get("id"),
                        # chat.* events name the trace, OpenAI's response.* the
                        # response id: either finds the lines of one chat.
                        trace=(event.get("data") or {}).get("traceId")
                        or (event.get("data") or {}).get("id"),
                        timestamp=event.get("timestamp"),
                        object=event.get("object"), created_at=event.get("created_at"),
                        raw=body.decode("utf-8", "replace"),
                        signature=self.headers.get("webhook-signature", ""),
                        content_type=self.headers.get("Content-Type", ""))
            record(phase="start", **info)
            with lock:
                seen[(self.path, hid)] = seen.get((self.path, hid), 0) + 1
                n = seen[(self.path, hid)]
            code = 200
            if not ok:
                code = 401
            elif self.path == "/fail3" and n <= 3:
                code = 500
            elif self.path == "/fail":
                code = 500
            elif self.path == "/gone":
                code = 410
            elif self.path == "/slow":
                time.sleep(SLOW_S)
            try:
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                pass
            record(phase="end", code=code, **info)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.rename(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
