"""A local HTTP file server for tests: serves given bytes on 127.0.0.1 and counts requests.

    with serve({"/text8.zip": data, "/cut": Cut(data, keep=100)}) as server:
      fetch(server.url("/text8.zip"), ...)
      server.hits["/text8.zip"]

``Cut(data, keep, length)`` sends ``length`` (default len(data)) as Content-Length, then only the
first ``keep`` bytes, then closes the connection: a download cut off midway, or with a wrong length.

``fake_downloads()`` makes tiny files laid out like the real downloads of text8, enwik8, ptb_word,
ptb_char and wikitext2_char; ``mirror(name, files, server)`` the data-config overrides that load
them from the server (url, size, sha256).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import http.server
import io
import tarfile
import threading
import zipfile

import numpy as np


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


def zip_bytes(members: dict) -> bytes:
  """A zip archive of {member name: str or bytes}."""
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
    for name, body in members.items():
      z.writestr(name, body)
  return buf.getvalue()


def tgz_bytes(members: dict) -> bytes:
  """A gzipped tar archive of {member name: bytes}."""
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode="w:gz") as t:
    for name, body in members.items():
      info = tarfile.TarInfo(name)
      info.size = len(body)
      t.addfile(info, io.BytesIO(body))
  return buf.getvalue()


def _letters(n: int, alphabet: str, seed: int) -> str:
  rng = np.random.default_rng(seed)
  return "".join(np.array(list(alphabet))[rng.integers(0, len(alphabet), n)])


def fake_downloads(n: int = 3000) -> dict:
  """{dataset: {URL path: bytes}}: tiny stand-ins of the real files, in their layouts (text8.zip
  and enwik8.zip hold one member each; ptb.{split}.txt are three plain files;
  simple-examples.tgz holds ./simple-examples/data/ptb.char.{split}.txt, characters between
  spaces and '_' between words; wikitext-2-raw-v1.zip holds wikitext-2-raw/wiki.{split}.raw).
  The valid and test texts hold symbols the train text lacks (unknown ids)."""
  words = _letters(n, "abcdefgh   ", 1).split()
  sentences = [" ".join(words[i:i + 7]) for i in range(0, len(words), 7)]
  thirds = {"train": sentences[:-8], "valid": sentences[-8:-4], "test": sentences[-4:]}
  ptb = {s: "".join(f" {t} \n" for t in ss) for s, ss in thirds.items()}
  ptb["valid"] += " zebra \n"  # A word unseen in train.
  chars = {s: "".join(" ".join("_" if c == " " else c for c in t) + "\n" for t in ss)
           for s, ss in thirds.items()}
  chars["test"] += "q u\n"
  wiki = {s: "".join(f" = {t} = \n" if i % 5 == 0 else f" {t} .\n" for i, t in enumerate(ss))
          for s, ss in thirds.items()}
  wiki["train"] += " Zürich 's café \n"
  wiki["valid"] += " Über 1984 \n"
  enwik8 = "".join(f"<page>{t} Zürich €</page>\n" for t in sentences).encode()
  return {
      "text8": {"/text8.zip": zip_bytes({"text8": _letters(n, " abcdefghijklmnopqrstuvwxyz", 0)})},
      "enwik8": {"/enwik8.zip": zip_bytes({"enwik8": enwik8})},
      "ptb_word": {f"/ptb/ptb.{s}.txt": t.encode() for s, t in ptb.items()},
      "ptb_char": {"/simple-examples.tgz": tgz_bytes(
          {f"./simple-examples/data/ptb.char.{s}.txt": t.encode() for s, t in chars.items()})},
      "wikitext2_char": {"/wikitext-2-raw-v1.zip": zip_bytes(
          {f"wikitext-2-raw/wiki.{s}.raw": t for s, t in wiki.items()})},
  }


def mirror(name: str, files: dict, server) -> dict:
  """data.url / data.sha256 (and data.size) that load ``files`` (fake_downloads()[name]) from
  ``server`` instead of the real hosts."""
  shas = ",".join(hashlib.sha256(b).hexdigest() for b in files.values())
  if len(files) == 1:
    (path, body), = files.items()
    return {"url": server.url(path), "sha256": shas, "size": len(body)}
  base = next(iter(files)).rsplit("/", 1)[0] + "/"
  return {"url": server.url(base), "sha256": shas}
