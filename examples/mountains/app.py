"""A stdlib-only JSON service: `GET /` lists mountains with their heights.

Listens on $PORT (default 8080) and exits 0 on SIGTERM, as a container's PID 1 must.
"""
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MOUNTAINS = [
    {"name": "Everest", "height": 8849},
    {"name": "K2", "height": 8611},
    {"name": "Kangchenjunga", "height": 8586},
    {"name": "Denali", "height": 6190},
    {"name": "Mont Blanc", "height": 4806},
]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/":
            self.reply(200, MOUNTAINS)
        elif path == "/healthz":
            self.reply(200, {"status": "ok"})
        else:
            self.reply(404, {"error": "not found", "path": path})

    def reply(self, status, payload):
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))


def stop(signum, frame):
    raise SystemExit(0)


def main():
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    signal.signal(signal.SIGTERM, stop)
    print("mountains: listening on port %d" % server.server_address[1], flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
