"""The model artifact: a directory the trainer writes and the worker loads. Format version 1.

Layout::

    <dir>/manifest.json          format, version, created_at_ms, params, shapes, metrics,
                                 and {"files": {name: {"sha256": hex, "bytes": int}}}
    <dir>/item_factors.npy       (n_items, k) float32
    <dir>/item_ids.json          JSON list of n_items strings (the producers' item ids)
    <dir>/item_popularity.npy    (n_items,) float32, summed training confidence per item
    <dir>/item_index.npy         optional: the top-N index of a big catalogue (int64, the
                                 rows in decreasing norm order, ``streamrec.als.ann``),
                                 described by ``manifest["index"]`` and checksummed as the rest

No pickle anywhere: arrays load with ``allow_pickle=False``. A directory is written under a
temporary name and renamed into place, so a reader never sees half a model, and it is verified
(checksums, shapes, dtypes, finite values) before it is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from streamrec.errors import ArtifactError

FORMAT = "streamrec-als"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FACTORS = "item_factors.npy"
ITEM_IDS = "item_ids.json"
POPULARITY = "item_popularity.npy"
FILES = (FACTORS, ITEM_IDS, POPULARITY)
INDEX = "item_index.npy"


class IndexFile(Protocol):
    """An index stored with the model: written by ``save``, described by ``meta`` (JSON, at
    least ``kind``). This module only stores and checksums it; ``streamrec.als.ann`` reads it."""

    def save(self, path: Path) -> None: ...

    def meta(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Model:
    """A loaded, verified model. ``item_factors`` may be a read-only memory map."""

    path: Path
    version: str
    item_ids: tuple[str, ...]
    item_factors: npt.NDArray[np.float32]
    item_popularity: npt.NDArray[np.float32]
    params: Mapping[str, Any]
    manifest: Mapping[str, Any] = field(repr=False)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def index_path(self) -> Path | None:
        """The stored approximate top-N index (``INDEX``), None when the model has none."""
        return self.path / INDEX if "index" in self.manifest else None

    @property
    def factors(self) -> int:
        return int(self.item_factors.shape[1])

    def popular(self, n: int) -> list[tuple[str, float]]:
        """The ``n`` most popular items with their popularity, best first."""
        from streamrec.keys import round_scores

        order = np.argsort(-self.item_popularity, kind="stable")[:n]
        scores = round_scores(self.item_popularity[order]).tolist()
        return [(self.item_ids[i], s) for i, s in zip(order, scores, strict=True)]

    def summary(self) -> dict[str, Any]:
        """What ``<p>:model`` holds."""
        return {
            "version": self.version,
            "created_at_ms": self.manifest["created_at_ms"],
            "n_items": self.n_items,
            "factors": self.factors,
            "params": dict(self.params),
            "path": str(self.path.resolve()),
        }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_model(
    out: Path,
    item_ids: Sequence[str],
    item_factors: npt.NDArray[np.float32],
    item_popularity: npt.NDArray[np.float32],
    params: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    index: IndexFile | None = None,
) -> Path:
    """Write a model directory at ``out`` atomically (replacing one already there).

    ``params`` must hold what fold-in needs: ``regularization``, ``alpha``, ``transform``.
    ``index``: an approximate top-N index of these factors, stored as ``INDEX``.
    Returns ``out``. Raises ArtifactError if the inputs are inconsistent.
    """
    factors = np.ascontiguousarray(item_factors, dtype=np.float32)
    popularity = np.ascontiguousarray(item_popularity, dtype=np.float32)
    ids = [str(i) for i in item_ids]
    _check_arrays(ids, factors, popularity)
    for key in ("regularization", "alpha", "transform"):
        if key not in params:
            raise ArtifactError(f"params lack {key!r}")
    created = int(time.time() * 1000)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        np.save(tmp / FACTORS, factors, allow_pickle=False)
        np.save(tmp / POPULARITY, popularity, allow_pickle=False)
        (tmp / ITEM_IDS).write_text(json.dumps(ids, ensure_ascii=False), "utf-8")
        names: tuple[str, ...] = FILES
        if index is not None:
            index.save(tmp / INDEX)
            names = (*FILES, INDEX)
        files: dict[str, dict[str, Any]] = {
            name: {"sha256": _sha256(tmp / name), "bytes": (tmp / name).stat().st_size}
            for name in names
        }
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(created / 1000))
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "version": f"{stamp}-{files[FACTORS]['sha256'][:8]}",
            "created_at_ms": created,
            "n_items": len(ids),
            "factors": int(factors.shape[1]),
            "params": dict(params),
            **(dict(extra) if extra else {}),
            **({"index": {**index.meta(), "file": INDEX}} if index is not None else {}),
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), "utf-8")
        for p in tmp.iterdir():
            fsync_path(p)
        load_model(tmp)  # never publish what we could not load back
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}-{created}")
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory: so a rename into it is on disk too)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text("utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no {MANIFEST}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}/{MANIFEST}: not JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}/{MANIFEST}: not a JSON object")
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format {manifest.get('format')!r} v{manifest.get('format_version')!r}, "
            f"expected {FORMAT!r} v{FORMAT_VERSION}"
        )
    return manifest


def load_model(path: Path, mmap: bool = True) -> Model:
    """Load and verify a model directory; raises ArtifactError on any inconsistency.

    With ``mmap`` the factors are a read-only memory map, so workers on one host share pages.
    A stored index (``INDEX``) is verified by its checksum here and opened by its reader
    (``streamrec.als.ann.load_for``).
    """
    path = Path(path)
    manifest = read_manifest(path)
    files = manifest.get("files")
    expected = (*FILES, INDEX) if "index" in manifest else FILES
    if not isinstance(files, dict) or set(files) != set(expected):
        raise ArtifactError(f"{path}: manifest must list exactly {', '.join(expected)}")
    if "index" in manifest and not (
        isinstance(manifest["index"], dict) and isinstance(manifest["index"].get("kind"), str)
    ):
        raise ArtifactError(f"{path}: manifest's index entry must be an object with a kind")
    for name, meta in files.items():
        f = path / name
        if not f.is_file():
            raise ArtifactError(f"{path}: missing {name}")
        if f.stat().st_size != meta.get("bytes") or _sha256(f) != meta.get("sha256"):
            raise ArtifactError(f"{path}: {name} does not match its checksum in {MANIFEST}")
    try:
        factors = np.load(path / FACTORS, mmap_mode="r" if mmap else None, allow_pickle=False)
        popularity = np.load(path / POPULARITY, allow_pickle=False)
        ids = json.loads((path / ITEM_IDS).read_text("utf-8"))
    except (ValueError, OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable array or id list ({exc})") from None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ArtifactError(f"{path}: {ITEM_IDS} must be a JSON list of strings")
    _check_arrays(ids, factors, popularity)
    if manifest.get("n_items") != len(ids) or manifest.get("factors") != factors.shape[1]:
        raise ArtifactError(f"{path}: shapes disagree with {MANIFEST}")
    params = manifest.get("params")
    if not isinstance(params, dict) or not all(
        k in params for k in ("regularization", "alpha", "transform")
    ):
        raise ArtifactError(f"{path}: params must give regularization, alpha and transform")
    return Model(
        path=path,
        version=str(manifest["version"]),
        item_ids=tuple(ids),
        item_factors=factors,
        item_popularity=popularity,
        params=params,
        manifest=manifest,
    )


def _check_arrays(
    ids: Sequence[str], factors: npt.NDArray[Any], popularity: npt.NDArray[Any]
) -> None:
    if factors.dtype != np.float32 or factors.ndim != 2:
        raise ArtifactError(
            f"item factors must be 2-D float32, got {factors.dtype} {factors.shape}"
        )
    if factors.shape[0] != len(ids) or popularity.shape != (len(ids),):
        raise ArtifactError(
            f"{len(ids)} item ids, factors {factors.shape}, popularity {popularity.shape}"
        )
    if popularity.dtype != np.float32:
        raise ArtifactError(f"item popularity must be float32, got {popularity.dtype}")
    if len(set(ids)) != len(ids):
        raise ArtifactError("item ids are not unique")
    if not (np.isfinite(factors).all() and np.isfinite(popularity).all()):
        raise ArtifactError("factors or popularity hold NaN or infinity")
