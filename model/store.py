"""Versioned model directories under one root: ``<root>/<version>/``, keep the last K.

A new model is written (``streamrec.artifact.write_model``: temporary name, verified, renamed)
to ``<root>/.incoming-<pid>-*`` and then renamed to its version, so ``<root>`` only ever holds
complete, verified models under their version names; both renames are fsynced, so a power cut
cannot leave the pointer naming a directory the disk never recorded. Names starting with ``.``
are never read as models. A writer killed halfway (SIGKILL, OOM) leaves its ``.incoming-<pid>-*``
(or ``..incoming-<pid>-*.tmp-*``) directory behind: the next write or prune deletes those whose
process is gone. Pruning never removes the live model.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamrec.artifact import (
    ContentMap,
    IndexFile,
    Model,
    fsync_path,
    load_model,
    read_manifest,
    write_model,
)
from streamrec.errors import ArtifactError

log = logging.getLogger(__name__)


def write_version(
    root: Path,
    item_ids: Sequence[str],
    item_factors: npt.NDArray[np.float32],
    item_popularity: npt.NDArray[np.float32],
    params: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    index: IndexFile | None = None,
    content: ContentMap | None = None,
) -> Model:
    """Write a new model as ``<root>/<version>`` and return it, loaded and verified;
    ``index``: its approximate top-N index (``streamrec.als.ann.build_for``), stored with it;
    ``content``: its content->factor map (``streamrec.als.content``), likewise."""
    root.mkdir(parents=True, exist_ok=True)
    sweep(root)  # a killed run's leftovers are a whole model's worth of disk each
    incoming = root / f".incoming-{os.getpid()}-{time.monotonic_ns()}"
    log.info("writing the model to %s", incoming)
    write_model(incoming, item_ids, item_factors, item_popularity, params, extra, index, content)
    version = str(read_manifest(incoming)["version"])
    final = root / version
    if final.exists():  # same second, same factors: the same model; keep the first copy
        shutil.rmtree(incoming, ignore_errors=True)
    else:
        fsync_path(incoming)  # its entries first, then the rename that publishes them
        incoming.rename(final)
        fsync_path(root)
    log.info("model %s in place at %s", version, final)
    return load_model(final)


#: A writer's temporary directories: ``.incoming-<pid>-<ns>`` and write_model's
#: ``..incoming-<pid>-<ns>.tmp-<random>`` inside ``root``.
_LEFTOVER = re.compile(r"^\.+incoming-(\d+)-\d+")
#: A writer's directory older than this is a leftover whatever its pid says (writing a model
#: takes seconds).
STALE_S = 6 * 3600.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def sweep(root: Path) -> list[Path]:
    """Delete what writers that are gone left under ``root`` (temporary directories of a
    ``write_version`` killed halfway).

    Gone: no process has its pid, or it is older than ``STALE_S`` (a pid seen from another
    container's namespace may belong to anyone here, even to this process). A live writer's
    directory, minutes old at most, stays.
    """
    if not root.is_dir():
        return []
    gone = []
    now = time.time()
    for d in root.iterdir():
        m = _LEFTOVER.match(d.name)
        if m is None or not d.is_dir():
            continue
        try:
            old = now - d.stat().st_mtime > STALE_S
        except FileNotFoundError:  # its writer just renamed it into place
            continue
        if not old and _alive(int(m.group(1))):
            continue
        shutil.rmtree(d, ignore_errors=True)
        log.warning("deleted %s: left by a model writer (pid %s) that died halfway",
                    d.name, m.group(1))  # fmt: skip
        gone.append(d)
    return gone


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
    """Delete all but the newest ``keep`` versions (and never those in ``protect``), and what
    killed writers left behind (``sweep``)."""
    sweep(root)
    keep_set = {p.resolve() for p in protect}
    all_versions = versions(root)
    doomed = [d for d in all_versions[: max(0, len(all_versions) - keep)]
              if d.resolve() not in keep_set]  # fmt: skip
    for d in doomed:
        shutil.rmtree(d, ignore_errors=True)
        log.info("pruned model %s", d.name)
    return doomed
