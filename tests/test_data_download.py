"""Downloads against a local HTTP server: cache, checksums, cut-off transfers, offline message."""

import hashlib
import os
import pathlib
import socket

import pytest

from inn_jax.data import download
from tests import data_testing as testing

DATA = bytes(range(256)) * 40  # 10,240 bytes.
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
  for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setenv("no_proxy", "127.0.0.1")


def _only(folder):
  """Every file left in ``folder`` (partial files start with a dot)."""
  return sorted(p.name for p in pathlib.Path(folder).iterdir())


def test_fetch_checks_and_writes(tmp_path):
  with testing.serve({"/f.bin": DATA}) as server:
    digest = download.fetch(server.url("/f.bin"), tmp_path / "f.bin", len(DATA), SHA)
  assert digest == SHA
  assert (tmp_path / "f.bin").read_bytes() == DATA
  assert _only(tmp_path) == ["f.bin"]
  assert download.verify(tmp_path / "f.bin", len(DATA), SHA) == SHA


def test_checksum_mismatch_keeps_nothing(tmp_path):
  wrong = "0" * 64
  with testing.serve({"/f.bin": DATA}) as server:
    with pytest.raises(ValueError, match=f"sha256 {SHA}, expected {wrong}") as e:
      download.fetch(server.url("/f.bin"), tmp_path / "f.bin", None, wrong)
  assert server.url("/f.bin") in str(e.value) and "data.sha256 and data.size" in str(e.value)
  assert _only(tmp_path) == []


@pytest.mark.parametrize("keep", [0, 5000])
def test_download_cut_off_midway(tmp_path, keep):
  with testing.serve({"/f.bin": testing.Cut(DATA, keep=keep)}) as server:
    with pytest.raises(ValueError, match=f"cut off: {keep:,} of {len(DATA):,} bytes") as e:
      download.fetch(server.url("/f.bin"), tmp_path / "f.bin", None, None, trust_first_use=True)
  assert str(tmp_path / "f.bin") in str(e.value)
  assert _only(tmp_path) == []  # Neither the file, nor its .part, nor a first-use sha256.


def test_short_content_length_caught_by_size(tmp_path):
  short = testing.Cut(DATA, keep=len(DATA), length=len(DATA) - 100)
  with testing.serve({"/f.bin": short}) as server:
    with pytest.raises(ValueError, match=f"has {len(DATA) - 100:,} bytes, expected {len(DATA):,}"):
      download.fetch(server.url("/f.bin"), tmp_path / "f.bin", len(DATA), None)
  assert _only(tmp_path) == []


def test_empty_download(tmp_path):
  with testing.serve({"/f.bin": b""}) as server:
    with pytest.raises(ValueError, match="is empty"):
      download.fetch(server.url("/f.bin"), tmp_path / "f.bin", 0, "")
  assert _only(tmp_path) == []


def test_offline_message_names_url_and_path(tmp_path):
  with socket.socket() as s:  # A port with nothing listening: connection refused, as offline.
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  url = f"http://127.0.0.1:{port}/text8.zip"
  with pytest.raises(FileNotFoundError) as e:
    download.fetch(url, tmp_path / "sub" / "text8.zip")
  assert url in str(e.value) and str(tmp_path / "sub" / "text8.zip") in str(e.value)
  assert "data.path" in str(e.value)
  assert _only(tmp_path / "sub") == []


def test_http_error_is_reported(tmp_path):
  with testing.serve({}) as server:
    with pytest.raises(FileNotFoundError, match="HTTP 404"):
      download.fetch(server.url("/missing.zip"), tmp_path / "missing.zip")


def test_first_use_sha256_is_stored_and_checked(tmp_path):
  dest = tmp_path / "text8.zip"
  with testing.serve({"/text8.zip": DATA}) as server:
    download.fetch(server.url("/text8.zip"), dest, len(DATA), None, trust_first_use=True)
  assert download.sidecar(dest).read_text() == f"{SHA}  text8.zip\n"
  assert download.verify(dest, len(DATA), None, trust_first_use=True) == SHA
  dest.write_bytes(DATA[::-1])  # Same size, other bytes.
  with pytest.raises(ValueError, match="recorded at its first download"):
    download.verify(dest, len(DATA), None, trust_first_use=True)


def test_first_use_sha256_written_for_hand_placed_file(tmp_path):
  dest = tmp_path / "text8.zip"
  dest.write_bytes(DATA)
  assert download.verify(dest, len(DATA), None, trust_first_use=True) == SHA
  assert download.sidecar(dest).read_text().split()[0] == SHA


def test_verify_size_mismatch(tmp_path):
  (tmp_path / "f.bin").write_bytes(DATA[:-1])
  with pytest.raises(ValueError, match=f"has {len(DATA) - 1:,} bytes, expected {len(DATA):,}"):
    download.verify(tmp_path / "f.bin", len(DATA), SHA)


def test_cache_root(monkeypatch, tmp_path):
  monkeypatch.setenv(download.ENV_CACHE, str(tmp_path / "env"))
  assert download.cache_root() == tmp_path / "env"
  assert download.cache_root(str(tmp_path / "cfg")) == tmp_path / "cfg"
  monkeypatch.delenv(download.ENV_CACHE)
  assert download.cache_root() == pathlib.Path(os.path.expanduser("~/.cache/inn_jax"))
