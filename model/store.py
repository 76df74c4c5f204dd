"""Versioned model directories under one root: ``<root>/<version>/``, keep the last K.

A new model is written (``streamrec.artifact.write_model``: temporary name, verified, renamed)
to ``<root>/.incoming-*`` and then renamed to its version, so ``<root>`` only ever holds
complete, verified models. Pruning never removes the live model.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamrec.artifact import Model, load_model, read_manifest, write_model
from streamrec.errors import ArtifactError

log = logging.getLogger(__name__)


def write_version(
    root: Path,
    item_ids: Sequence[str],
    item_factors: npt.NDArray[np.float32],
    item_popularity: npt.NDArray[np.float32],
    params: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> Model:
    """Write a new model as ``<root>/<version>`` and return it, loaded and verified."""
    root.mkdir(parents=True, exist_ok=True)
    incoming = root / f".incoming-{os.getpid()}-{time.monotonic_ns()}"
    write_model(incoming, item_ids, item_factors, item_popularity, params, extra)
    version = str(read_manifest(incoming)["version"])
    final = root / version
    if final.exists():  # same second, same factors: the same model; keep the first copy
        shutil.rmtree(incoming, ignore_errors=True)
    else:
        incoming.rename(final)
    return load_model(final)


def versions(root: Path) -> list[Path]:
    """Complete model directories under ``root``, oldest first (by their manifest's time)."""
    found = []
    if not root.is_dir():
        return []
    for d in root.iterdir():
        if d.name.startswith(".") or not d.is_dir():
            continue
        try:
            found.append((int(read_manifest(d)["created_at_ms"]), d))
        except (ArtifactError, KeyError, ValueError):
            log.warning("ignoring %s: not a model directory", d)
    return [d for _, d in sorted(found)]


def prune(root: Path, keep: int, protect: Sequence[Path] = ()) -> list[Path]:
    """Delete all but the newest ``keep`` versions (and never those in ``protect``)."""
    keep_set = {p.resolve() for p in protect}
    all_versions = versions(root)
    doomed = [d for d in all_versions[: max(0, len(all_versions) - keep)]
              if d.resolve() not in keep_set]  # fmt: skip
    for d in doomed:
        shutil.rmtree(d, ignore_errors=True)
        log.info("pruned model %s", d.name)
    return doomed
