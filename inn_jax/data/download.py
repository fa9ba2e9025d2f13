"""Downloads into a cache directory: atomic, size- and sha256-checked, with a clear offline message.

A file is streamed into a temporary file beside its destination and renamed into place only once
its length (against Content-Length and the expected size) and sha256 check out, so an interrupted or
wrong download never leaves a file in the cache. A file with no published sha256 gets one on first
use: it is written beside the file as ``<name>.sha256`` and checked on every later load.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import pathlib
import tempfile
import urllib.error
import urllib.request

ENV_CACHE = "INN_JAX_CACHE"
_CHUNK = 1 << 20
_USER_AGENT = "Mozilla/5.0 (compatible; inn_jax data loader)"
_log = logging.getLogger(__name__)


def cache_root(cache_dir: str | None = None) -> pathlib.Path:
  """``cache_dir``, else $INN_JAX_CACHE, else ~/.cache/inn_jax."""
  root = cache_dir or os.environ.get(ENV_CACHE) or os.path.join("~", ".cache", "inn_jax")
  return pathlib.Path(root).expanduser()


def sha256_file(path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      h.update(chunk)
  return h.hexdigest()


def sidecar(path) -> pathlib.Path:
  """Where a first-use sha256 is kept: ``<file>.sha256``, in sha256sum's format."""
  path = pathlib.Path(path)
  return path.with_name(path.name + ".sha256")


def _skip_hint() -> str:
  return ("If it is the file you want (a mirror's version), set data.sha256 and data.size to its "
          "values, or to '' and 0 to skip these checks.")


def check_contents(what: str, nbytes: int, digest: str, size: int | None, sha256: str | None):
  """Raises ValueError naming ``what`` when its length or sha256 is not the expected one."""
  if nbytes == 0:
    raise ValueError(f"{what} is empty (0 bytes): the server or the copy is broken; delete it and "
                     f"try again, or point data.path at a good copy.")
  if size and nbytes != size:
    raise ValueError(f"{what} has {nbytes:,} bytes, expected {size:,}: it is incomplete or another "
                     f"version. {_skip_hint()}")
  if sha256 and digest != sha256.lower():
    raise ValueError(f"{what} has sha256 {digest}, expected {sha256}: it is corrupt or another "
                     f"version. {_skip_hint()}")


def verify(path, size: int | None = None, sha256: str | None = None, *,
           trust_first_use: bool = False) -> str:
  """Checks a file already on disk and returns its sha256.

  With no expected sha256 and ``trust_first_use``, the sidecar written at download time is the
  reference (and is written now when missing, e.g. for a file placed in the cache by hand).
  """
  path = pathlib.Path(path)
  what = f"file {path}"
  nbytes = path.stat().st_size
  if size and nbytes != size:  # Cheap check before hashing.
    check_contents(what, nbytes, "", size, None)
  digest = sha256_file(path)
  reference = sha256
  if sha256 is None and trust_first_use:
    if sidecar(path).exists():
      reference = sidecar(path).read_text().split()[0]
      what += f" (checked against the sha256 recorded at its first download, in {sidecar(path)})"
    else:
      _write_atomic(sidecar(path), f"{digest}  {path.name}\n".encode())
  check_contents(what, nbytes, digest, size, reference)
  return digest


def _write_atomic(dest: pathlib.Path, data: bytes):
  fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(tmp, dest)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise


def _offline_message(url, dest, reason) -> str:
  return (f"could not download {url} ({reason}). If this machine is offline, fetch that URL "
          f"elsewhere and place the file, unchanged, at\n  {dest}\nor set data.path to a local "
          f"copy, or data.url to a mirror.")


def fetch(url: str, dest, size: int | None = None, sha256: str | None = None, *,
          timeout: float = 60.0, trust_first_use: bool = False) -> str:
  """Downloads ``url`` to ``dest`` atomically after checking it; returns its sha256.

  Raises FileNotFoundError when the server cannot be reached (the message says where to put the
  file by hand) and ValueError when what arrived is cut off, empty, the wrong size or the wrong
  sha256; in every failure nothing is left at ``dest`` or beside it.
  """
  dest = pathlib.Path(dest)
  dest.parent.mkdir(parents=True, exist_ok=True)
  _log.info("downloading %s to %s", url, dest)
  fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
  try:
    h, nbytes, expected = hashlib.sha256(), 0, None
    with os.fdopen(fd, "wb") as f:
      try:
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        with urllib.request.urlopen(request, timeout=timeout) as response:
          expected = response.headers.get("Content-Length")
          while chunk := response.read(_CHUNK):
            f.write(chunk)
            h.update(chunk)
            nbytes += len(chunk)
      except urllib.error.HTTPError as e:
        raise FileNotFoundError(_offline_message(url, dest, f"HTTP {e.code} {e.reason}")) from e
      except urllib.error.URLError as e:
        raise FileNotFoundError(_offline_message(url, dest, e.reason)) from e
      except (OSError, http.client.HTTPException) as e:  # Reset or timeout part-way through.
        raise ValueError(f"download of {url} was cut off after {nbytes:,} bytes ({e!r}); nothing "
                         f"was kept. Run again, or place the file by hand at {dest}.") from e
    if expected is not None and nbytes != int(expected):
      raise ValueError(f"download of {url} was cut off: {nbytes:,} of {int(expected):,} bytes "
                       f"arrived; nothing was kept. Run again, or place the file by hand at "
                       f"{dest}.")
    check_contents(f"download of {url}", nbytes, h.hexdigest(), size, sha256)
    os.replace(tmp, dest)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise
  if sha256 is None and trust_first_use:
    _write_atomic(sidecar(dest), f"{h.hexdigest()}  {dest.name}\n".encode())
  return h.hexdigest()
