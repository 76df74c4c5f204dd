"""The models dir: what ``sweep`` takes for a dead writer's leftovers, and what it leaves.

(A writer actually killed halfway: tests/faults/test_retrain_faults.py.)
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np

from streamrec.model.store import STALE_S, sweep, versions, write_version


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _model(root: Path) -> str:
    rng = np.random.default_rng(0)
    model = write_version(root, ["a", "b"], rng.random((2, 3), dtype=np.float32),
                          np.ones(2, np.float32), dict(regularization=1.0, alpha=1.0,
                                                       transform="log"))  # fmt: skip
    return model.version


def test_sweep_deletes_dead_writers_leftovers_and_keeps_live_ones_and_models(
    tmp_path: Path,
) -> None:
    version = _model(tmp_path)
    dead, me = _dead_pid(), os.getpid()
    for name in (f".incoming-{dead}-1", f"..incoming-{dead}-2.tmp-abc", f".incoming-{me}-3",
                 ".keep-me", "not-a-model"):  # fmt: skip
        (tmp_path / name).mkdir()
        (tmp_path / name / "item_factors.npy").write_bytes(b"half")
    gone = sweep(tmp_path)
    assert sorted(d.name for d in gone) == [f"..incoming-{dead}-2.tmp-abc", f".incoming-{dead}-1"]
    left = sorted(d.name for d in tmp_path.iterdir())
    assert left == sorted([version, f".incoming-{me}-3", ".keep-me", "not-a-model"])
    assert [d.name for d in versions(tmp_path)] == [version]  # the half-written ones never count


def test_an_old_leftover_goes_whatever_its_pid(tmp_path: Path) -> None:
    # A pid seen from another container's namespace can be anyone's here, even our own.
    old = tmp_path / f".incoming-{os.getpid()}-1"
    old.mkdir()
    then = time.time() - STALE_S - 60
    os.utime(old, (then, then))
    assert sweep(tmp_path) == [old]


def test_a_version_is_written_with_its_top_n_index(tmp_path: Path) -> None:
    from streamrec.als.ann import NormIndex, load_for
    from streamrec.artifact import INDEX
    from streamrec.settings import load_settings

    rng = np.random.default_rng(0)
    y = (rng.standard_normal((500, 8)) * rng.lognormal(0, 1, (500, 1))).astype(np.float32)
    params = {"regularization": 0.1, "alpha": 1.0, "transform": "log"}
    model = write_version(tmp_path, [f"i{r}" for r in range(500)], y,
                          np.ones(500, np.float32), params, index=NormIndex.build(y))  # fmt: skip
    assert model.path.parent == tmp_path and (model.path / INDEX).is_file()
    assert model.manifest["index"]["kind"] == "norm-order-mips"
    index = load_for(model, load_settings(ann_min_items=500))
    assert index is not None
    norms = np.linalg.norm(y, axis=1)[index.order]
    assert sorted(index.order.tolist()) == list(range(500)) and (np.diff(norms) <= 1e-6).all()
