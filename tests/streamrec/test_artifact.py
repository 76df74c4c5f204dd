"""The model artifact: written atomically, verified on load, never pickled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamrec.artifact import (
    CONTENT,
    FACTORS,
    ITEM_IDS,
    MANIFEST,
    POPULARITY,
    ContentMap,
    load_content_map,
    load_model,
    write_model,
)
from streamrec.errors import ArtifactError

PARAMS = {"regularization": 1.0, "alpha": 2.0, "transform": "log"}


def _write(path: Path, n: int = 20, k: int = 4) -> Path:
    rng = np.random.default_rng(0)
    return write_model(
        path,
        [f"i{j}" for j in range(n)],
        rng.standard_normal((n, k)).astype(np.float32),
        rng.random(n).astype(np.float32),
        PARAMS,
    )


def test_round_trip(tmp_path: Path) -> None:
    out = _write(tmp_path / "m")
    model = load_model(out)
    assert model.n_items == 20 and model.factors == 4
    assert model.item_factors.dtype == np.float32
    assert isinstance(model.item_factors, np.memmap)  # shared pages across workers
    manifest = json.loads((out / MANIFEST).read_text())
    assert set(manifest["files"]) == {FACTORS, ITEM_IDS, POPULARITY}
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    assert model.summary()["path"] == str(out.resolve())
    assert not list(tmp_path.glob(".m.tmp-*"))


def test_rewrite_replaces_atomically(tmp_path: Path) -> None:
    _write(tmp_path / "m")
    _write(tmp_path / "m", n=30)
    assert load_model(tmp_path / "m").n_items == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_flipped_byte_is_refused(tmp_path: Path) -> None:
    out = _write(tmp_path / "m")
    data = bytearray((out / FACTORS).read_bytes())
    data[-1] ^= 0x01
    (out / FACTORS).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum"):
        load_model(out)


def test_missing_file_and_bad_manifest(tmp_path: Path) -> None:
    out = _write(tmp_path / "m")
    (out / POPULARITY).unlink()
    with pytest.raises(ArtifactError, match="missing"):
        load_model(out)
    (out / MANIFEST).write_text("{nope")
    with pytest.raises(ArtifactError, match="not JSON"):
        load_model(out)
    with pytest.raises(ArtifactError, match="no manifest"):
        load_model(tmp_path / "absent")


def test_pickled_array_refused_even_with_matching_checksum(tmp_path: Path) -> None:
    import hashlib

    out = _write(tmp_path / "m")
    # A valid .npy header for an object array (what a pickled array looks like to a reader),
    # then bytes: the loader must refuse the dtype without ever unpickling anything.
    with (out / FACTORS).open("wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "|O", "fortran_order": False, "shape": (20, 4)}
        )
        f.write(b"\x80\x04not really a pickle")
    manifest = json.loads((out / MANIFEST).read_text())
    blob = (out / FACTORS).read_bytes()
    manifest["files"][FACTORS] = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"unreadable|float32"):
        load_model(out)


@pytest.mark.parametrize(
    ("ids", "factors", "message"),
    [
        (["a", "a"], np.zeros((2, 3), np.float32), "unique"),
        (["a", "b"], np.zeros(2, np.float32), "2-D"),
        (["a", "b"], np.zeros((3, 3), np.float32), "2 item ids"),
        (["a", "b"], np.full((2, 3), np.nan, np.float32), "NaN"),
    ],
)
def test_inconsistent_inputs_never_written(
    tmp_path: Path, ids: list[str], factors: np.ndarray, message: str
) -> None:
    with pytest.raises(ArtifactError, match=message):
        write_model(tmp_path / "m", ids, factors, np.ones(len(ids), np.float32), PARAMS)
    assert not (tmp_path / "m").exists()


def _content_map(k: int = 4) -> ContentMap:
    rng = np.random.default_rng(1)
    return ContentMap(
        ("energy", "tempo"),
        ("jazz", "pop", "rock"),
        np.array([0.5, 120.0], np.float32),
        np.array([0.2, 30.0], np.float32),
        rng.standard_normal((2 + 3 + 1, k)).astype(np.float32),
    )


def _write_with_map(path: Path, cmap: ContentMap) -> Path:
    rng = np.random.default_rng(0)
    return write_model(
        path,
        [f"i{j}" for j in range(20)],
        rng.standard_normal((20, 4)).astype(np.float32),
        rng.random(20).astype(np.float32),
        PARAMS,
        content=cmap,
    )


def test_content_map_round_trip(tmp_path: Path) -> None:
    cmap = _content_map()
    out = _write_with_map(tmp_path / "m", cmap)
    manifest = json.loads((out / MANIFEST).read_text())
    assert set(manifest["files"]) == {FACTORS, ITEM_IDS, POPULARITY, CONTENT}
    assert manifest["content"] == {
        "feature_names": ["energy", "tempo"],
        "categories": ["jazz", "pop", "rock"],
        "factors": 4,
        "file": CONTENT,
    }
    model = load_model(out)
    assert model.content_path == out / CONTENT
    back = load_content_map(out)
    assert back is not None
    assert back.feature_names == cmap.feature_names and back.categories == cmap.categories
    for name in ("mean", "scale", "weights"):
        assert getattr(back, name).dtype == np.float32
        np.testing.assert_array_equal(getattr(back, name), getattr(cmap, name))
    # no pickle inside: every member loads with allow_pickle=False as float32
    with np.load(out / CONTENT, allow_pickle=False) as z:
        assert sorted(z.files) == ["mean", "scale", "weights"]
    # a model without a map has none
    plain = _write(tmp_path / "plain")
    assert load_content_map(plain) is None and load_model(plain).content_path is None


def test_corrupted_content_map_refused(tmp_path: Path) -> None:
    out = _write_with_map(tmp_path / "m", _content_map())
    data = bytearray((out / CONTENT).read_bytes())
    data[len(data) // 2] ^= 0x01
    (out / CONTENT).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum"):
        load_model(out)
    with pytest.raises(ArtifactError, match="checksum"):
        load_content_map(out)
    (out / CONTENT).unlink()
    with pytest.raises(ArtifactError, match="missing"):
        load_model(out)
    with pytest.raises(ArtifactError, match="missing"):
        load_content_map(out)


def test_content_map_names_must_fit_its_arrays(tmp_path: Path) -> None:
    out = _write_with_map(tmp_path / "m", _content_map())
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["content"]["categories"] = ["jazz", "pop"]  # one name short of the weights' rows
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="weights"):
        load_model(out)
    with pytest.raises(ArtifactError, match="weights"):
        load_content_map(out)


def test_content_map_of_other_factors_never_written(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="factors"):
        _write_with_map(tmp_path / "m", _content_map(k=3))
    assert not (tmp_path / "m").exists()
