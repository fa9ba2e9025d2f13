"""A local HTTP file server for tests: serves given bytes on 127.0.0.1 and counts requests.

    with serve({"/text8.zip": data, "/cut": Cut(data, keep=100)}) as server:
      fetch(server.url("/text8.zip"), ...)
      server.hits["/text8.zip"]

``Cut(data, keep, length)`` sends ``length`` (default len(data)) as Content-Length, then only the
first ``keep`` bytes, then closes the connection: a download cut off midway, or with a wrong length.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import http.server
import threading


@dataclasses.dataclass(frozen=True)
class Cut:
  data: bytes
  keep: int
  length: int | None = None


class _Handler(http.server.BaseHTTPRequestHandler):
  files: dict = {}
  hits: collections.Counter = collections.Counter()

  def do_GET(self):  # noqa: N802 (http.server's name)
    self.hits[self.path] += 1
    body = self.files.get(self.path)
    if body is None:
      self.send_error(404)
      return
    cut = body if isinstance(body, Cut) else Cut(body, len(body))
    self.send_response(200)
    self.send_header("Content-Length", str(len(cut.data) if cut.length is None else cut.length))
    self.end_headers()
    self.wfile.write(cut.data[:cut.keep])
    self.close_connection = True

  def log_message(self, *args):  # Quiet test output.
    pass


class _Server:
  def __init__(self, httpd, hits):
    self._httpd, self.hits = httpd, hits

  def url(self, path: str = "/") -> str:
    host, port = self._httpd.server_address[:2]
    return f"http://{host}:{port}{path}"


@contextlib.contextmanager
def serve(files: dict):
  """Serves ``files`` (URL path -> bytes or Cut) on 127.0.0.1 at a port the OS picks."""
  hits = collections.Counter()
  handler = type("Handler", (_Handler,), {"files": dict(files), "hits": hits})
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
  thread.start()
  try:
    yield _Server(httpd, hits)
  finally:
    httpd.shutdown()
    httpd.server_close()
    thread.join()
