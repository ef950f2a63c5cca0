#!/usr/bin/env python3
"""A tiny stand-in for Apache Solr, good enough for CKAN 2.11/2.12 writes.

CKAN pushes every dataset/resource write to its search index synchronously and
answers HTTP 500 "Search Index Error" when Solr is unreachable.  This stub
accepts those writes and discards them, so every ``*_create``/``*_update``/
``*_patch``/``*_show`` action works against a real CKAN without Solr.
``package_search`` always returns zero hits.

What it answers (under any core prefix, e.g. ``/solr/ckan``):

* ``POST|GET .../update``       -> ``{"responseHeader": {"status": 0, "QTime": 0}}``
  (adds, deletes and commits are accepted and dropped)
* ``GET|POST .../select``       -> zero hits in Solr's ``wt=json`` shape
  (``response.numFound=0``, ``docs=[]``, empty ``facet_counts`` for every
  requested ``facet.field``)
* ``GET .../schema?wt=schema.xml`` and ``GET .../admin/file/?file=schema.xml``
  -> the ``schema.xml`` shipped with the installed CKAN (CKAN reads its
  ``name="ckan-X.Y"`` attribute at start-up to check the schema version)
* ``GET .../schema/version``    -> ``{"version": 1.6}``
* ``GET .../admin/ping``        -> ``{"status": "OK"}``
* anything else                  -> 404 JSON

Standard library only.  Usage::

    python3 scripts/solr_stub.py [--host 127.0.0.1] [--port 8983] [--schema PATH]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Used only if no CKAN install can be found: enough for CKAN's version check.
FALLBACK_SCHEMA = (
    '<?xml version="1.0" encoding="UTF-8" ?>\n'
    '<schema name="ckan-2.12" version="1.6">\n'
    "  <uniqueKey>index_id</uniqueKey>\n"
    "</schema>\n"
)


def find_schema() -> str | None:
    pattern = os.path.join(
        REPO_ROOT, ".ckan", "venv", "lib", "python3*", "site-packages", "ckan", "config", "solr", "schema.xml"
    )
    hits = sorted(glob.glob(pattern))
    return hits[0] if hits else None


class SolrStubHandler(BaseHTTPRequestHandler):
    server_version = "solr-stub/1.0"
    protocol_version = "HTTP/1.1"
    schema_xml: bytes = FALLBACK_SCHEMA.encode()
    verbose = False

    # -- plumbing -----------------------------------------------------------
    def log_message(self, fmt, *args):
        if self.verbose:
            sys.stderr.write("%s solr-stub %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), fmt % args))

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size_line = self.rfile.readline().strip()
                size = int(size_line.split(b";")[0] or b"0", 16)
                if size == 0:
                    # trailer section ends with an empty line
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json; charset=utf-8")

    def _params(self, query: str, body: bytes) -> dict[str, list[str]]:
        params = parse_qs(query, keep_blank_values=True)
        ctype = self.headers.get("Content-Type", "")
        if body and ctype.startswith("application/x-www-form-urlencoded"):
            for key, values in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items():
                params.setdefault(key, []).extend(values)
        return params

    # -- dispatch -----------------------------------------------------------
    def do_GET(self):
        self._dispatch(b"")

    def do_HEAD(self):
        self._dispatch(b"")

    def do_POST(self):
        self._dispatch(self._read_body())

    def _dispatch(self, body: bytes) -> None:
        parts = urlsplit(self.path)
        path = re.sub(r"/+", "/", parts.path).rstrip("/")
        params = self._params(parts.query, body)
        header = {"status": 0, "QTime": 0}

        if re.search(r"/update(/(json|xml|csv|json/docs))?$", path):
            # add / delete / commit: accept and forget
            return self._json(200, {"responseHeader": header})

        if path.endswith("/select") or path.endswith("/query"):
            return self._select(params, header)

        if path.endswith("/admin/ping"):
            return self._json(200, {"responseHeader": header, "status": "OK"})

        if path.endswith("/schema/version"):
            return self._json(200, {"responseHeader": header, "version": 1.6})

        if path.endswith("/schema/name"):
            return self._json(200, {"responseHeader": header, "name": self._schema_name()})

        if path.endswith("/schema"):
            wt = (params.get("wt") or ["json"])[0]
            if wt == "schema.xml":
                return self._send(200, self.schema_xml, "application/xml; charset=utf-8")
            return self._json(200, {"responseHeader": header, "schema": {"name": self._schema_name(), "version": 1.6}})

        if path.endswith("/admin/file"):
            fname = (params.get("file") or [""])[0]
            if fname in ("schema.xml", "managed-schema", "managed-schema.xml"):
                return self._send(200, self.schema_xml, "application/xml; charset=utf-8")
            return self._json(404, {"responseHeader": {"status": 404}, "error": {"msg": "no such file", "code": 404}})

        return self._json(
            404,
            {
                "responseHeader": {"status": 404, "QTime": 0},
                "error": {"msg": "solr-stub: unknown path %s" % parts.path, "code": 404},
            },
        )

    def _schema_name(self) -> str:
        m = re.search(rb'<schema[^>]*\bname="([^"]+)"', self.schema_xml)
        return m.group(1).decode() if m else "ckan"

    def _select(self, params: dict[str, list[str]], header: dict) -> None:
        flat = {k: (v[0] if len(v) == 1 else v) for k, v in params.items()}
        try:
            start = int((params.get("start") or ["0"])[0])
        except ValueError:
            start = 0
        payload: dict = {
            "responseHeader": dict(header, params=flat),
            "response": {"numFound": 0, "start": start, "numFoundExact": True, "docs": []},
        }
        if (params.get("facet") or ["false"])[0].lower() == "true":
            payload["facet_counts"] = {
                "facet_queries": {},
                "facet_fields": {f: [] for f in params.get("facet.field", [])},
                "facet_ranges": {},
                "facet_intervals": {},
                "facet_heatmaps": {},
            }
        if "cursorMark" in params:
            payload["nextCursorMark"] = params["cursorMark"][0]
        self._json(200, payload)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=int(os.environ.get("CKAN_LOCAL_SOLR_PORT", "8983")))
    ap.add_argument(
        "--schema", help="path of CKAN's schema.xml (default: the one in .ckan/venv, else a built-in minimal one)"
    )
    ap.add_argument("--pid-file")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every request to stderr")
    args = ap.parse_args(argv)

    schema_path = args.schema or find_schema()
    if schema_path:
        with open(schema_path, "rb") as fh:
            SolrStubHandler.schema_xml = fh.read()
    SolrStubHandler.verbose = args.verbose

    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.daemon_threads = True
    server = ThreadingHTTPServer((args.host, args.port), SolrStubHandler)
    if args.pid_file:
        with open(args.pid_file, "w") as fh:
            fh.write("%d\n" % os.getpid())
    sys.stderr.write(
        "solr-stub listening on http://%s:%d (schema: %s)\n" % (args.host, args.port, schema_path or "built-in")
    )
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
