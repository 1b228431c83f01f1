#!/usr/bin/env python3
"""scripts/keyvault-emulator.py — a minimal Azure Key Vault *secrets* data-plane emulator over HTTPS.

Stand-in for Lowkey Vault (scripts/keyvault prefers Lowkey Vault's jar when scripts/fixtures has it;
Maven Central does not serve lowkey-vault-app, so this is what runs on a machine without it).
Only what keyseal's backups use, with Key Vault's observable behaviour:

- every request without `Authorization: Bearer <anything>` gets 401 and the challenge header Key
  Vault sends (`WWW-Authenticate: Bearer authorization="…", resource="<vault url>"`), so clients
  go through the SDK's real challenge flow; any bearer token is accepted afterwards;
- PUT /secrets/{name} (new version each time; names 1–127 of 0-9a-zA-Z-, else 400 BadParameter),
  GET /secrets/{name}[/{version}] (404 SecretNotFound), GET /secrets (paged by `maxresults`,
  `nextLink` with a `$skiptoken`), GET /secrets/{name}/versions; DELETE is refused (405) because
  keyseal never deletes backups;
- `api-version` is required, as Key Vault requires it; GET /ping answers 200 without auth.

State is in memory only. Usage: keyvault-emulator.py --port P --cert C --key K [--host 127.0.0.1]
"""

import argparse
import json
import re
import ssl
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
LOCK = threading.Lock()
SECRETS = {}  # lower-case name -> list of bundles (oldest first); Key Vault names are case-insensitive


def error(code, message):
    return {"error": {"code": code, "message": message}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "keyseal-keyvault-emulator"

    def log_message(self, fmt, *args):  # one line per request, no bodies
        print("%s %s" % (self.address_string(), fmt % args), flush=True)

    def base(self):
        return "https://%s" % (self.headers.get("Host") or "%s:%d" % self.server.server_address[:2])

    def send(self, status, body=None, extra=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def gate(self):
        """Common checks; returns (path parts, query) or None after answering."""
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        query = parse_qs(url.query)
        if parts == ["ping"]:
            self.read_body()
            self.send(200, {"status": "ok"})
            return None
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or len(auth) <= len("Bearer "):
            self.read_body()
            challenge = 'Bearer authorization="https://login.microsoftonline.com/common", resource="%s"' % self.base()
            self.send(401, error("Unauthorized", "AKV10000: Request is missing a Bearer token."),
                      {"WWW-Authenticate": challenge})
            return None
        if "api-version" not in query:
            self.read_body()
            self.send(400, error("BadParameter", "The api-version query parameter is required."))
            return None
        if not parts or parts[0] != "secrets":
            self.read_body()
            self.send(404, error("NotFound", "no such endpoint"))
            return None
        return parts, query

    def item(self, bundle):
        item = {k: v for k, v in bundle.items() if k != "value"}
        item["id"] = bundle["id"].rsplit("/", 1)[0]
        return item

    def page(self, items, query, link_path):
        size = int((query.get("maxresults") or ["25"])[0])
        start = int((query.get("$skiptoken") or ["0"])[0])
        chunk = items[start:start + size]
        nxt = None
        if start + size < len(items):
            nxt = "%s%s?api-version=%s&maxresults=%d&$skiptoken=%d" % (
                self.base(), link_path, query["api-version"][0], size, start + size)
        self.send(200, {"value": chunk, "nextLink": nxt})

    def do_GET(self):
        gated = self.gate()
        if gated is None:
            return
        parts, query = gated
        with LOCK:
            if len(parts) == 1:
                items = [self.item(v[-1]) for _, v in sorted(SECRETS.items())]
                return self.page(items, query, "/secrets")
            versions = SECRETS.get(parts[1].lower())
            if not versions:
                return self.send(404, error("SecretNotFound", "A secret with (name/id) %s was not found in this key vault." % parts[1]))
            if len(parts) == 3 and parts[2] == "versions":
                return self.page([self.item(b) for b in versions], query, "/secrets/%s/versions" % parts[1])
            if len(parts) == 2 or parts[2] == "":
                return self.send(200, versions[-1])
            for b in versions:
                if b["id"].endswith("/" + parts[2]):
                    return self.send(200, b)
            return self.send(404, error("SecretNotFound", "A secret with (name/id) %s/%s was not found in this key vault." % (parts[1], parts[2])))

    def do_PUT(self):
        gated = self.gate()
        if gated is None:
            return
        parts, _ = gated
        raw = self.read_body()
        if len(parts) != 2:
            return self.send(405, error("BadParameter", "method not allowed"))
        name = parts[1]
        if not NAME.match(name):
            return self.send(400, error("BadParameter", "The request URI contains an invalid name: %s" % name))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self.send(400, error("BadParameter", "invalid JSON body"))
        if not isinstance(body.get("value"), str):
            return self.send(400, error("BadParameter", "Property value is required."))
        now = int(time.time())
        attrs = {"enabled": True, "created": now, "updated": now, "recoveryLevel": "Recoverable+Purgeable",
                 "recoverableDays": 90}
        attrs.update({k: v for k, v in (body.get("attributes") or {}).items() if k in ("enabled", "nbf", "exp")})
        bundle = {"value": body["value"], "id": "%s/secrets/%s/%s" % (self.base(), name, uuid.uuid4().hex),
                  "attributes": attrs}
        if body.get("contentType") is not None:
            bundle["contentType"] = body["contentType"]
        if body.get("tags") is not None:
            bundle["tags"] = body["tags"]
        with LOCK:
            versions = SECRETS.setdefault(name.lower(), [])
            if versions:  # Key Vault keeps the name's original spelling
                bundle["id"] = "%s/secrets/%s/%s" % (self.base(), versions[0]["id"].split("/")[-2], bundle["id"].rsplit("/", 1)[1])
            versions.append(bundle)
        self.send(200, bundle)

    def do_DELETE(self):
        if self.gate() is not None:
            self.send(405, error("Forbidden", "this emulator does not delete secrets"))

    do_POST = do_PATCH = do_DELETE


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    a = ap.parse_args()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(a.cert, a.key)
    srv = ThreadingHTTPServer((a.host, a.port), Handler)
    srv.daemon_threads = True
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print("keyvault emulator listening on https://%s:%d" % (a.host, a.port), flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
