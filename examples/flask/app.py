"""A Flask JSON service: `GET /` lists rivers, `GET /versions` names the packages serving it.

Listens on $PORT (default 8080), says so on stdout, and exits 0 on SIGTERM, as a container's
PID 1 must.
"""
import os
import signal
import sys
from importlib.metadata import version

from flask import Flask, jsonify
from werkzeug.serving import make_server

RIVERS = [
    {"name": "Nile", "length_km": 6650},
    {"name": "Amazon", "length_km": 6400},
    {"name": "Yangtze", "length_km": 6300},
    {"name": "Mississippi", "length_km": 6275},
    {"name": "Danube", "length_km": 2850},
]

app = Flask(__name__)


@app.get("/")
def rivers():
    return jsonify(RIVERS)


@app.get("/versions")
def versions():
    return jsonify({name: version(name) for name in ("flask", "werkzeug", "jinja2", "markupsafe")})


@app.errorhandler(404)
def not_found(error):
    return jsonify({"error": "not found"}), 404


def stop(signum, frame):
    raise SystemExit(0)


def main():
    port = int(os.environ.get("PORT", "8080"))
    server = make_server("0.0.0.0", port, app, threaded=True)
    signal.signal(signal.SIGTERM, stop)
    print("flask example: listening on port %d" % server.server_port, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        print("flask example: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
