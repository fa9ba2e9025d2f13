"""Where a dataset's bytes come from: a local path, or the cache (downloading on a miss).

A dataset names its downloadable files (``Resource``) and which file, or which member of an archive,
holds each split (``Member``). ``Files`` finds or fetches them, checks them, and reads members of
zip and tar archives with a clear error for truncated or corrupt ones.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import tarfile
import zipfile
import zlib

from inn_jax.data import download

_ARCHIVE_SUFFIXES = (".zip", ".tgz", ".tar", ".gz", ".bz2", ".xz")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclasses.dataclass(frozen=True)
class Resource:
  """A downloadable file; ``sha256=None`` means none is published (checked against first use)."""
  filename: str
  url: str
  size: int | None = None
  sha256: str | None = None


@dataclasses.dataclass(frozen=True)
class Member:
  """Where split ("all", "train", "valid" or "test") lives: member ``name`` of a resource's archive,
  or with ``name=None`` the resource file itself."""
  split: str
  resource: int
  name: str | None = None


def with_overrides(resources, cfg) -> tuple[Resource, ...]:
  """Applies data.url / data.sha256 / data.size (mirror overrides) to a dataset's resources.

  One file: the values replace its URL, sha256 and size. Several files: data.url is a base URL that
  each file name is appended to, data.sha256 a comma-separated list in the dataset's file order.
  sha256 '' and size 0 switch that check off; a sha256 override also drops the dataset's own size.
  """
  n = len(resources)
  if cfg.sha256 is None:
    shas = [r.sha256 for r in resources]
  else:
    shas = [""] * n if cfg.sha256 == "" else [s.strip() for s in cfg.sha256.split(",")]
    if len(shas) != n or not all(_HEX64.match(s) or s == "" for s in shas):
      names = ", ".join(r.filename for r in resources)
      raise ValueError(f"data.sha256={cfg.sha256!r} must be '' (no check) or {n} sha256 hex "
                       f"digest(s) of 64 characters, comma-separated, for: {names}.")
  if cfg.size not in (None, 0) and n != 1:
    raise ValueError(f"data.size={cfg.size} applies to single-file datasets only; this one has {n} "
                     f"files. Use data.size=0 to switch the size checks off, or leave it unset.")
  out = []
  for r, sha in zip(resources, shas):
    url = r.url if not cfg.url else cfg.url if n == 1 else cfg.url.rstrip("/") + "/" + r.filename
    # A sha256 override names another file, so the dataset's own size no longer applies.
    size = cfg.size if cfg.size is not None else None if cfg.sha256 is not None else r.size
    out.append(Resource(r.filename, url, size, sha))
  return tuple(out)


def _norm(name: str) -> str:
  while name.startswith("./"):
    name = name[2:]
  return name.lstrip("/")


def _pick(names, wanted: str, where) -> str:
  """The member called ``wanted``, allowing a leading './' or an extra top folder."""
  normed = {_norm(n): n for n in names}
  hits = [n for k, n in normed.items() if k == wanted] or \
         [n for k, n in normed.items() if k.endswith("/" + wanted)]
  if len(hits) == 1:
    return hits[0]
  shown = ", ".join(sorted(normed)[:8]) + (" ..." if len(normed) > 8 else "")
  raise ValueError(f"{where} has no member {wanted!r} (it holds: {shown}); it is not the expected "
                   f"archive. Delete it so that it is downloaded again, or set data.path to the "
                   f"right file.")


def read_member(path, name: str | None) -> bytes:
  """The bytes of ``path`` itself, or of member ``name`` of the zip or tar archive at ``path``."""
  path = pathlib.Path(path)
  broken = (f"{path} is not a readable zip or tar archive: it is truncated or corrupt. Delete it "
            f"so that it is downloaded again, or replace it with a good copy.")
  if name is None:
    return path.read_bytes()
  try:
    if zipfile.is_zipfile(path):
      with zipfile.ZipFile(path) as z:
        return z.read(_pick(z.namelist(), name, path))
    with tarfile.open(path, "r:*") as t:
      members = {m.name: m for m in t.getmembers() if m.isfile()}
      return t.extractfile(members[_pick(members, name, path)]).read()
  except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, OSError) as e:
    raise ValueError(f"{broken} ({type(e).__name__}: {e})") from e


class Files:
  """The local files behind a dataset's splits, found under data.path or fetched into the cache.

  Args:
    name: the dataset, which names its cache folder.
    resources: its downloadable files (empty for text_file, whose data.path is the text).
    members: which file / archive member holds each split.
    cfg: the data config (path, cache_dir, url, sha256, size).
  """

  def __init__(self, name: str, resources, members, cfg):
    self.resources = with_overrides(resources, cfg)
    self.local = cfg.path is not None
    self._at = {}  # split -> (file, archive member or None)
    self.sha256 = {}  # file -> its sha256
    if self.local:
      root = pathlib.Path(cfg.path).expanduser()
      if not root.exists():
        raise FileNotFoundError(f"data.path={str(root)!r} does not exist; point it at the "
                                f"dataset's file or folder, or unset it to download.")
      for m in members:
        self._at[m.split] = self._find_local(root, m, len(members))
      self.source = sorted({str(p) for p, _ in self._at.values()})
      return
    if not resources:
      raise ValueError(f"data.name={name!r} reads a local file: set data.path to it.")
    paths = []
    for r in self.resources:
      dest = download.cache_root(cfg.cache_dir) / name / r.filename
      if dest.exists():
        self.sha256[dest] = download.verify(dest, r.size, r.sha256, trust_first_use=True)
      else:
        self.sha256[dest] = download.fetch(r.url, dest, r.size, r.sha256, trust_first_use=True)
      paths.append(dest)
    self._at = {m.split: (paths[m.resource], m.name) for m in members}
    self.source = [r.url for r in self.resources]

  def _find_local(self, root: pathlib.Path, m: Member, n_members: int):
    """Finds a split under data.path: the dataset's file itself, or the already-extracted member."""
    if not self.resources:
      if not root.is_file():
        raise ValueError(f"data.path={str(root)!r} must be a text file for this dataset.")
      return root, None
    r = self.resources[m.resource]
    if root.is_dir():
      names = [r.filename] + ([m.name, m.name.split("/")[-1]] if m.name else [])
      found = next((root / n for n in names if (root / n).is_file()), None)
      if found is None:
        raise FileNotFoundError(f"{root} holds none of {', '.join(names)} (for the {m.split} "
                                f"split); put the dataset's file(s) there, or unset data.path to "
                                f"download into the cache.")
    elif len(self.resources) == 1:
      found = root
    else:
      raise ValueError(f"data.path={str(root)!r} must be a folder holding "
                       f"{', '.join(x.filename for x in self.resources)}.")
    if found.name == r.filename or m.name is None or found.suffix in _ARCHIVE_SUFFIXES:
      if found not in self.sha256:  # The dataset's own file: check it like a download.
        self.sha256[found] = download.verify(found, r.size, r.sha256)
      return found, m.name
    if found == root and n_members > 1:
      raise ValueError(f"data.path={str(root)!r} is one extracted file, but this dataset has "
                       f"{n_members} (one a split): set data.path to {r.filename} or to the "
                       f"folder holding the extracted files.")
    return found, None  # Already extracted.

  def where(self, split: str) -> str:
    path, name = self._at[split]
    return f"{name} in {path}" if name else str(path)

  def sha256_of(self, split: str) -> str:
    """The sha256 of the file holding ``split`` (hashed now if it was not checked)."""
    path = self._at[split][0]
    if path not in self.sha256:
      self.sha256[path] = download.sha256_file(path)
    return self.sha256[path]

  def checksums(self) -> dict[str, str]:
    """sha256 of every file behind the splits, by path."""
    return {str(path): self.sha256_of(split) for split, (path, _) in self._at.items()}

  def read(self, split: str) -> bytes:
    data = read_member(*self._at[split])
    if not data:
      raise ValueError(f"{self.where(split)} is empty; the dataset's file is broken: replace it "
                       f"(or delete it from the cache to download it again).")
    return data
