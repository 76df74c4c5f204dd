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
    <dir>/content_map.npz        optional: the content->factor map (``ContentMap``): float32
                                 ``mean`` (f,), ``scale`` (f,), ``weights`` (f + c + 1, k);
                                 its feature names and category vocabulary are in
                                 ``manifest["content"]``; checksummed as the rest

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
import zipfile
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
CONTENT = "content_map.npz"
#: The arrays of ``CONTENT``, each float32.
CONTENT_ARRAYS = ("mean", "scale", "weights")
#: The feature an item's ``year`` attribute (``streamrec.catalog.Item.year``) becomes when
#: its ``features`` do not already hold one: a release year is content like any other.
YEAR_FEATURE = "year"

F32 = npt.NDArray[np.float32]


class HasContent(Protocol):
    """What the content map reads of an item (``streamrec.catalog.Item`` is one): numeric
    ``features`` and ``categories``; an optional ``year`` attribute (int or None) is read as
    the feature ``YEAR_FEATURE`` when ``features`` lack it."""

    @property
    def features(self) -> Mapping[str, float]: ...

    @property
    def categories(self) -> Sequence[str]: ...


def item_features(item: HasContent) -> Mapping[str, float]:
    """``item.features``, plus ``YEAR_FEATURE`` from ``item.year`` when it has one and the
    features do not."""
    features = item.features
    year = getattr(item, "year", None)
    if year is not None and YEAR_FEATURE not in features:
        return {**features, YEAR_FEATURE: float(year)}
    return features


@dataclass(frozen=True)
class ContentMap:
    """A learned map from an item's content to ALS item factors (ridge regression, fitted by
    ``streamrec.als.content.fit_content_map``), stored with the model as ``CONTENT``.

    ``feature_names``: the f numeric features, in column order; ``categories``: the c
    categories of the one-hot columns (after the features); ``mean``/``scale``: (f,) float32
    means and standard deviations of the features on the training items (scale 1 where the
    deviation is 0); ``weights``: (f + c + 1, k) float32, the last row the bias.
    """

    feature_names: tuple[str, ...]
    categories: tuple[str, ...]
    mean: F32
    scale: F32
    weights: F32

    def __post_init__(self) -> None:
        f, c = len(self.feature_names), len(self.categories)
        if len(set(self.feature_names)) != f or len(set(self.categories)) != c:
            raise ArtifactError("content map: feature names or categories are not unique")
        for name in CONTENT_ARRAYS:
            a = getattr(self, name)
            if not isinstance(a, np.ndarray) or a.dtype != np.float32:
                raise ArtifactError(f"content map: {name} must be a float32 array")
            if not np.isfinite(a).all():
                raise ArtifactError(f"content map: {name} holds NaN or infinity")
        if self.mean.shape != (f,) or self.scale.shape != (f,):
            raise ArtifactError(
                f"content map: {f} features, mean {self.mean.shape}, scale {self.scale.shape}"
            )
        if self.weights.ndim != 2 or self.weights.shape[0] != f + c + 1:
            raise ArtifactError(
                f"content map: weights {self.weights.shape}, expected ({f + c + 1}, k)"
            )
        if (self.scale <= 0).any():
            raise ArtifactError("content map: scale must be positive")

    @property
    def factors(self) -> int:
        """k, the factors it predicts."""
        return int(self.weights.shape[1])

    @property
    def width(self) -> int:
        """f + c, the columns of ``encode``."""
        return len(self.feature_names) + len(self.categories)

    def encode(self, items: Sequence[HasContent]) -> F32:
        """(m, f + c) float32: each item's standardized features ``(x - mean) / scale`` (a
        missing or non-finite feature is the mean, so 0), then a 0/1 column per category of
        the vocabulary (categories outside it are ignored). Features outside
        ``feature_names`` are ignored."""
        f = len(self.feature_names)
        col = {name: j for j, name in enumerate(self.feature_names)}
        cat = {name: f + j for j, name in enumerate(self.categories)}
        raw = np.tile(self.mean.astype(np.float64), (len(items), 1))
        x = np.zeros((len(items), self.width), dtype=np.float32)
        for r, item in enumerate(items):
            for name, value in item_features(item).items():
                j = col.get(name)
                if j is not None:
                    v = float(value)
                    if np.isfinite(v):
                        raw[r, j] = v
            for name in item.categories:
                j = cat.get(name)
                if j is not None:
                    x[r, j] = 1.0
        x[:, :f] = (raw - self.mean) / self.scale
        return x

    def predict(self, items: Sequence[HasContent]) -> F32:
        """(m, k) float32 item factors mapped from the items' content."""
        return predict_encoded(self, self.encode(items))

    def meta(self) -> dict[str, Any]:
        """The manifest's ``content`` entry (without the file name)."""
        return {
            "feature_names": list(self.feature_names),
            "categories": list(self.categories),
            "factors": self.factors,
        }


def predict_encoded(cmap: ContentMap, x: F32) -> F32:
    """(m, k) float32 factors from (m, f + c) ``cmap.encode`` rows: ``x @ W[:-1] + W[-1]``."""
    w = cmap.weights
    return np.asarray(x @ w[:-1] + w[-1], dtype=np.float32)


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
    def content_path(self) -> Path | None:
        """The stored content->factor map (``CONTENT``), None when the model has none; read
        it with ``load_content_map``."""
        return self.path / CONTENT if "content" in self.manifest else None

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
    content: ContentMap | None = None,
) -> Path:
    """Write a model directory at ``out`` atomically (replacing one already there).

    ``params`` must hold what fold-in needs: ``regularization``, ``alpha``, ``transform``.
    ``index``: an approximate top-N index of these factors, stored as ``INDEX``.
    ``content``: the content->factor map of these factors, stored as ``CONTENT``.
    Returns ``out``. Raises ArtifactError if the inputs are inconsistent.
    """
    factors = np.ascontiguousarray(item_factors, dtype=np.float32)
    popularity = np.ascontiguousarray(item_popularity, dtype=np.float32)
    ids = [str(i) for i in item_ids]
    _check_arrays(ids, factors, popularity)
    if content is not None and content.factors != factors.shape[1]:
        raise ArtifactError(
            f"content map predicts {content.factors} factors, the model has {factors.shape[1]}"
        )
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
            names = (*names, INDEX)
        if content is not None:
            save_content_map(tmp / CONTENT, content)
            names = (*names, CONTENT)
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
            **({"content": {**content.meta(), "file": CONTENT}} if content is not None else {}),
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
    expected = (
        *FILES,
        *((INDEX,) if "index" in manifest else ()),
        *((CONTENT,) if "content" in manifest else ()),
    )
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
    if "content" in manifest:
        # Read whole here (it is small) so a map that does not fit the model is refused with
        # the model, like any bad artifact, not when the first new item arrives.
        cmap = _read_content_map(path, manifest)
        if cmap.factors != factors.shape[1]:
            raise ArtifactError(
                f"{path}: content map predicts {cmap.factors} factors, the model has "
                f"{factors.shape[1]}"
            )
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


def save_content_map(path: Path, cmap: ContentMap) -> None:
    """Write ``cmap``'s arrays to ``path`` (an ``.npz`` of float32 ``CONTENT_ARRAYS``, no
    pickle); its names go in the manifest (``ContentMap.meta``, written by ``write_model``)."""
    with Path(path).open("wb") as f:
        np.savez(f, **{name: getattr(cmap, name) for name in CONTENT_ARRAYS})


def load_content_map(model_dir: Path) -> ContentMap | None:
    """The content->factor map stored in ``model_dir``, None when the model has none.

    Verifies the file's checksum against the manifest, its arrays (float32, shapes that fit
    the names, finite, no pickle) and that it predicts the model's number of factors; raises
    ArtifactError otherwise."""
    path = Path(model_dir)
    manifest = read_manifest(path)
    if "content" not in manifest:
        return None
    files = manifest.get("files")
    meta = files.get(CONTENT) if isinstance(files, dict) else None
    f = path / CONTENT
    if not isinstance(meta, dict) or not f.is_file():
        raise ArtifactError(f"{path}: manifest names a content map but {CONTENT} is missing")
    if f.stat().st_size != meta.get("bytes") or _sha256(f) != meta.get("sha256"):
        raise ArtifactError(f"{path}: {CONTENT} does not match its checksum in {MANIFEST}")
    cmap = _read_content_map(path, manifest)
    if cmap.factors != manifest.get("factors"):
        raise ArtifactError(
            f"{path}: content map predicts {cmap.factors} factors, the model has "
            f"{manifest.get('factors')}"
        )
    return cmap


def _read_content_map(path: Path, manifest: Mapping[str, Any]) -> ContentMap:
    entry = manifest.get("content")
    if not isinstance(entry, dict):
        raise ArtifactError(f"{path}: manifest's content entry must be an object")
    names, cats = entry.get("feature_names"), entry.get("categories")
    if not (
        isinstance(names, list)
        and isinstance(cats, list)
        and all(isinstance(x, str) for x in (*names, *cats))
    ):
        raise ArtifactError(
            f"{path}: manifest's content entry must list feature_names and categories (strings)"
        )
    try:
        with np.load(path / CONTENT, allow_pickle=False) as z:
            if set(z.files) != set(CONTENT_ARRAYS):
                raise ArtifactError(
                    f"{path}: {CONTENT} must hold exactly {', '.join(CONTENT_ARRAYS)}"
                )
            arrays = {name: z[name] for name in CONTENT_ARRAYS}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"{path}: unreadable {CONTENT} ({exc})") from None
    return ContentMap(tuple(names), tuple(cats), **arrays)
