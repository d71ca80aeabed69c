#!/usr/bin/env python3
"""A stand-in for the builder: prints every event transbordo serve POSTs to it and checks
its signature (X-Transbordo-Signature = sha256=hex(HMAC-SHA256(secret, ts + "." + body))).

    BUILDER_SECRET=dev python3 scripts/builder-receiver.py 9000
"""
import hashlib
import hmac
import http.server
import json
import os
import sys

SECRET = os.environ.get("BUILDER_SECRET", "").encode()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        ts = self.headers.get("x-transbordo-timestamp", "")
        want = "sha256=" + hmac.new(SECRET, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(want, self.headers.get("x-transbordo-signature", ""))
        try:
            event = json.loads(body)
        except ValueError:
            event = body.decode(errors="replace")
        print(f"[{'signed' if ok else 'BAD SIGNATURE'}] {json.dumps(event, ensure_ascii=False)}", flush=True)
        self.send_response(200 if ok else 401)
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
