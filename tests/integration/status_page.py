#!/usr/bin/env python3
"""status_page.py - drives headless Chromium through the api's status page, as a
user would: loads GET /, gives the gateway key the page asks for, waits for the
live data (workers listed, throughput plotted), sends a chat through the page's
form, waits until the page shows it completed with the expected answer, and
saves a screenshot.

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe:
JSON messages ending in NUL on fds 3 and 4), so no WebSocket client and no
package beyond the standard library is needed. Run by test_status_page.c; exits
0 when everything was seen, 1 with the reason on stderr otherwise.

  status_page.py --chromium PATH --url URL --key KEY --message TEXT
                 --expect TEXT --workers N --screenshot FILE --profile DIR
                 [--linger SECONDS]   (watch that long first: the README's screenshot)
"""
import argparse
import base64
import json
import os
import select
import subprocess
import sys
import time


class Browser:
    def __init__(self, chromium, profile):
        to_child_r, self.to_child = os.pipe()
        self.from_child, from_child_w = os.pipe()
        # Move the child's ends out of the way of 3 and 4 before dup2-ing them there.
        a = os.dup(to_child_r) if to_child_r < 5 else to_child_r
        b = os.dup(from_child_w) if from_child_w < 5 else from_child_w
        while a < 5:
            a = os.dup(a)
        while b < 5:
            b = os.dup(b)

        def child_fds():
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [chromium, "--headless", "--remote-debugging-pipe", "--no-sandbox",
             "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--disable-extensions", "--hide-scrollbars", "--user-data-dir=" + profile,
             "--window-size=1280,1500", "about:blank"],
            # pass_fds keeps 3 and 4 open past the close of every other fd, which
            # comes after preexec_fn has put the pipes there.
            preexec_fn=child_fds, pass_fds=(3, 4),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in {to_child_r, from_child_w, a, b}:
            os.close(fd)
        self.next_id = 0
        self.buf = b""
        self.session = None

    def send(self, method, params=None, timeout=30):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self.to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self.next_id:
                    if "error" in reply:
                        raise RuntimeError("%s: %s" % (method, reply["error"]))
                    return reply.get("result", {})
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("%s: no answer from Chromium in %d s" % (method, timeout))
            ready, _, _ = select.select([self.from_child], [], [], left)
            if ready:
                chunk = os.read(self.from_child, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the pipe (crashed?)")
                self.buf += chunk

    def js(self, expr):
        r = self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True,
                                           "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError("JS %s: %s" % (expr, r["exceptionDetails"]))
        return r["result"].get("value")

    def wait(self, expr, what, timeout):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.js(expr)
            if last:
                return last
            time.sleep(0.1)
        raise RuntimeError("waited %d s for %s (last: %r)" % (timeout, what, last))

    def close(self):
        try:
            self.session = None
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main():
    ap = argparse.ArgumentParser()
    for opt in ("chromium", "url", "key", "message", "expect", "screenshot", "profile"):
        ap.add_argument("--" + opt, required=True)
    ap.add_argument("--workers", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=60)
    # For the README's screenshot: watch a loaded system this long first.
    ap.add_argument("--linger", type=float, default=0)
    args = ap.parse_args()

    b = Browser(args.chromium, args.profile)
    try:
        target = b.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        b.session = b.send("Target.attachToTarget",
                           {"targetId": target, "flatten": True})["sessionId"]
        b.send("Page.enable")
        b.send("Runtime.enable")
        b.send("Emulation.setDeviceMetricsOverride",
               {"width": 1280, "height": 1500, "deviceScaleFactor": 1, "mobile": False})
        b.send("Page.navigate", {"url": args.url})
        b.wait("document.readyState === 'complete' && !!document.getElementById('chat-form')",
               "the page to load", args.timeout)

        # With gateway keys the page shows its key box and nothing else.
        b.wait("getComputedStyle(document.getElementById('key-box')).display !== 'none'",
               "the page to ask for a gateway key", args.timeout)
        b.js("document.getElementById('key').focus()")
        b.send("Input.insertText", {"text": args.key})
        b.js("document.getElementById('key-use').click(), true")
        b.wait("getComputedStyle(document.getElementById('key-box')).display === 'none'",
               "the key to be taken", args.timeout)

        b.wait("document.querySelectorAll('#workers tr').length >= %d && "
               "document.getElementById('workers-count').textContent === '(%d live)'"
               % (args.workers, args.workers),
               "%d live workers listed" % args.workers, args.timeout)

        time.sleep(args.linger)
        b.js("document.getElementById('chat-message').focus()")
        b.send("Input.insertText", {"text": args.message})
        b.js("document.getElementById('chat-send').click(), true")
        b.wait("document.getElementById('chat-trace').textContent.length === 36",
               "a traceId for the chat", args.timeout)
        status = b.wait(
            "(s => s === 'processing' || s === 'sending…' ? '' : s)"
            "(document.getElementById('chat-status').textContent)",
            "the chat to finish", args.timeout)
        if status != "completed":
            raise RuntimeError("the chat ended %r: %r" % (
                status, b.js("document.getElementById('chat-response').textContent")))
        response = b.js("document.getElementById('chat-response').textContent")
        if response != args.expect:
            raise RuntimeError("the page shows the answer %r, want %r" % (response, args.expect))
        # The plots: the completion shows in the throughput samples.
        b.wait("hist.some(p => p.completed > 0)", "the completion in the throughput plot",
               args.timeout)
        shot = b.send("Page.captureScreenshot", {"format": "png"})["data"]
        with open(args.screenshot, "wb") as f:
            f.write(base64.b64decode(shot))
        print("status page: chat %s completed; screenshot %s" % (
            b.js("document.getElementById('chat-trace').textContent"), args.screenshot))
        return 0
    except Exception as e:  # the reason is what the test prints
        print("status page: %s" % e, file=sys.stderr)
        try:
            print("status page: state %r, chat status %r" % (
                b.js("document.getElementById('state').textContent"),
                b.js("document.getElementById('chat-status').textContent")), file=sys.stderr)
        except Exception:
            pass
        return 1
    finally:
        b.close()


if __name__ == "__main__":
    sys.exit(main())
