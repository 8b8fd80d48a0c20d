"""A lenient Flask 3.1 upstream for tests/lenient.rs.

It is built the way real deployments are, each piece a common pattern:

- HTTPMethodOverrideMiddleware is the "Adding HTTP Method Overrides" pattern from
  Flask's documentation, extended to the two other header names that other frameworks
  honour (X-HTTP-Method, X-Method-Override);
- RewriteUrlMiddleware routes by X-Original-URL / X-Rewrite-URL, as Symfony and Zend do
  behind IIS rewrite modules;
- the bulk-update handlers take POST only, and look the tenant up as backends that merge
  path and query parameters do (the `client` query parameter wins) and compare it as
  MySQL's default collations do (case, accents, compatibility forms and trailing space
  ignored);
- Werkzeug itself upper-cases the request method.

Recorder (outermost, so it sees each request exactly as it arrived) keeps every request
and every executed bulk update; GET /__log returns them as JSON (and is not recorded).
Each test request carries X-Authgate-Case, so the test can tell its cases apart.

Usage: python app.py   (listens on 127.0.0.1, port 0, and prints the port on stdout)
"""

import sys
import threading
import unicodedata
from urllib.parse import unquote_to_bytes

from flask import Flask, jsonify, request
from werkzeug.serving import WSGIRequestHandler, make_server

LOCK = threading.Lock()
REQUESTS = []
EXECUTIONS = []

OVERRIDE_HEADERS = ("HTTP_X_HTTP_METHOD_OVERRIDE", "HTTP_X_HTTP_METHOD", "HTTP_X_METHOD_OVERRIDE")


class HTTPMethodOverrideMiddleware:
    """Flask's documented pattern, honouring three header names instead of one."""

    allowed_methods = frozenset(["GET", "HEAD", "POST", "DELETE", "PUT", "PATCH", "OPTIONS"])
    bodyless_methods = frozenset(["GET", "HEAD", "OPTIONS", "DELETE"])

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        for header in OVERRIDE_HEADERS:
            method = environ.get(header, "").upper()
            if method in self.allowed_methods:
                environ["REQUEST_METHOD"] = method
            if method in self.bodyless_methods:
                environ["CONTENT_LENGTH"] = "0"
        return self.app(environ, start_response)


class RewriteUrlMiddleware:
    """Routes by X-Original-URL or X-Rewrite-URL when present (Symfony's Request)."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        url = environ.get("HTTP_X_ORIGINAL_URL") or environ.get("HTTP_X_REWRITE_URL")
        if url:
            path, _, query = url.partition("?")
            # WSGI carries the decoded path's bytes as latin-1.
            environ["PATH_INFO"] = unquote_to_bytes(path).decode("latin-1")
            if query:
                environ["QUERY_STRING"] = query
        return self.app(environ, start_response)


class Recorder:
    """Records every request as it arrived, before any rewriting."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != "/__log":
            seen = {
                "case": environ.get("HTTP_X_AUTHGATE_CASE"),
                "method": environ.get("REQUEST_METHOD"),
                "target": environ.get("RAW_URI") or environ.get("PATH_INFO"),
                "authorization": environ.get("HTTP_AUTHORIZATION"),
                "x_original_url": environ.get("HTTP_X_ORIGINAL_URL"),
                "x_rewrite_url": environ.get("HTTP_X_REWRITE_URL"),
            }
            with LOCK:
                REQUESTS.append(seen)
        return self.app(environ, start_response)


def fold_tenant(name):
    """How a case- and accent-insensitive collation compares tenant names."""
    decomposed = unicodedata.normalize("NFKD", name)
    kept = "".join(
        c for c in decomposed if not unicodedata.combining(c) and unicodedata.category(c) != "Cf"
    )
    return kept.casefold().strip()


app = Flask(__name__)


def batch_update(client):
    client = request.args.get("client", client)
    body = request.get_data()
    with LOCK:
        EXECUTIONS.append(
            {
                "case": request.headers.get("X-Authgate-Case"),
                "method": request.method,
                "path": request.path,
                "client": client,
                "tenant": fold_tenant(client),
                "authorization": request.headers.get("Authorization"),
                "body_bytes": len(body),
            }
        )
    xml = (
        "<response><success>true</success><batchStatus>http://backend/m2/"
        f"{client}/profile/batchStatus?batchId=1</batchStatus>"
        "<message>Batch submitted for processing</message></response>"
    )
    return xml, 200, {"Content-Type": "application/xml"}


@app.post("/m2/<client>/profile/batchUpdate")
def batch_update_v1(client):
    return batch_update(client)


@app.post("/m2/<client>/v2/profile/batchUpdate")
def batch_update_v2(client):
    return batch_update(client)


@app.route("/m2/<client>/profile/update", methods=["GET", "POST"])
def single_update(client):
    return jsonify(updated=True)


@app.get("/rest/v1/profiles/<profile_id>")
def profile(profile_id):
    return jsonify(id=profile_id, client=request.args.get("client"))


@app.get("/__log")
def log():
    with LOCK:
        return jsonify(requests=list(REQUESTS), executions=list(EXECUTIONS))


class QuietHandler(WSGIRequestHandler):
    """Werkzeug's handler without the line per request (errors are still logged)."""

    def log_request(self, code="-", size="-"):
        pass


def main():
    wsgi = Recorder(HTTPMethodOverrideMiddleware(RewriteUrlMiddleware(app.wsgi_app)))
    server = make_server("127.0.0.1", 0, wsgi, threaded=True, request_handler=QuietHandler)
    print(server.port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
