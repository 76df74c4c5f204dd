"""The content->factor map: known answers of the ridge fit, standardization, missing content."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest

from streamrec.als.content import (
    ContentMap,
    content_vectors,
    fit_content_map,
    vocabulary,
)


@dataclass(frozen=True)
class It:
    features: Mapping[str, float]
    categories: Sequence[str] = ()
    year: int | None = None


@dataclass(frozen=True)
class Bare:  # no year attribute at all
    features: Mapping[str, float] = field(default_factory=dict)
    categories: Sequence[str] = ()


CATS = ("jazz", "pop", "rock", "soul")


def _planted(n: int, seed: int) -> tuple[list[It], np.ndarray, np.ndarray]:
    """Items whose factors are an exact linear function of their raw features and
    categories: (items, factors (n, 3), raw features (n, 2))."""
    rng = np.random.default_rng(seed)
    raw = rng.normal([120.0, -8.0], [25.0, 3.0], size=(n, 2))
    onehot = np.zeros((n, len(CATS)))
    items = []
    for i in range(n):
        cats = [c for c in CATS if rng.random() < 0.4]
        onehot[i, [CATS.index(c) for c in cats]] = 1
        items.append(It({"tempo": raw[i, 0], "loudness": raw[i, 1]}, tuple(cats)))
    a = np.array([[0.01, -0.02, 0.03], [0.1, 0.2, -0.1]])
    b = np.random.default_rng(99).normal(size=(len(CATS), 3))  # one relation for every seed
    y = raw @ a + onehot @ b + np.array([0.5, -0.25, 1.0])
    return items, y.astype(np.float32), raw


@pytest.mark.parametrize("lam", [0.0, 1e-7])
def test_recovers_known_linear_factors(lam: float) -> None:
    items, y, _ = _planted(60, 0)
    cmap = fit_content_map(items, y, lam)
    assert cmap.feature_names == ("loudness", "tempo") and cmap.categories == CATS
    assert cmap.weights.shape == (2 + 4 + 1, 3) and cmap.weights.dtype == np.float32
    np.testing.assert_allclose(cmap.predict(items), y, atol=2e-4)
    # ... and items it never saw, from the same relation
    new, y_new, _ = _planted(10, 1)
    np.testing.assert_allclose(cmap.predict(new), y_new, atol=2e-4)


def test_standardization_on_training_items() -> None:
    items, y, raw = _planted(40, 2)
    cmap = fit_content_map(items, y)
    np.testing.assert_allclose(cmap.mean, raw[:, ::-1].mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(cmap.scale, raw[:, ::-1].std(axis=0), rtol=1e-4)
    x = cmap.encode(items)
    assert x.shape == (40, 6) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, :2].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(x[:, :2].std(axis=0), 1, atol=1e-4)
    assert set(np.unique(x[:, 2:])) <= {0.0, 1.0}


def test_constant_feature_scale_one_and_zero_column() -> None:
    items = [It({"a": 3.0, "b": float(i)}) for i in range(5)]
    cmap = fit_content_map(items, np.ones((5, 2), np.float32))
    assert cmap.scale[cmap.feature_names.index("a")] == 1.0
    assert (cmap.encode(items)[:, cmap.feature_names.index("a")] == 0).all()


def test_missing_and_unknown_content() -> None:
    items = [It({"a": 1.0, "b": 10.0}, ("x",)), It({"a": 3.0}, ("y",)), It({"b": 30.0}, ("x",))]
    cmap = fit_content_map(items, np.zeros((3, 2), np.float32))
    # means over the items that have the feature
    assert cmap.mean.tolist() == [2.0, 20.0]
    x = cmap.encode([It({"b": float("nan"), "zzz": 5.0}, ("x", "never-seen")), Bare()])
    assert x.tolist() == [[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    # an item with no known content gets the bias: the mean factors of a centred fit
    assert np.allclose(cmap.predict([Bare()]), cmap.weights[-1])


def test_bias_not_regularized() -> None:
    items, y, _ = _planted(50, 3)
    cmap = fit_content_map(items, y, regularization=1e9)
    # every weight is crushed to 0 but the bias, which stays the fit of a constant: the mean
    np.testing.assert_allclose(cmap.predict(items), np.tile(y.mean(axis=0), (50, 1)), atol=1e-3)


def test_year_attribute_is_a_feature() -> None:
    items = [It({"a": float(i)}, (), 1990 + 2 * i) for i in range(6)]
    cmap = fit_content_map(items, np.arange(6, dtype=np.float32)[:, None] * 2)
    assert cmap.feature_names == ("a", "year")
    # features win over the attribute when both are given
    x = cmap.encode([It({"year": 1990.0}, (), 2020)])
    assert x[0, 1] == pytest.approx((1990 - cmap.mean[1]) / cmap.scale[1])


def test_min_category_count() -> None:
    items = [It({}, ("a", "b")), It({}, ("a",)), It({}, ("a", "c")), It({}, ("b",))]
    assert vocabulary(items, 2) == ((), ("a", "b"))
    cmap = fit_content_map(items, np.ones((4, 1), np.float32), min_category_count=2)
    assert cmap.categories == ("a", "b")


def test_bad_input() -> None:
    items = [It({"a": 1.0}), It({"a": 2.0})]
    with pytest.raises(ValueError):
        fit_content_map(items, np.ones((3, 2), np.float32))
    with pytest.raises(ValueError):
        fit_content_map(items, np.ones((2, 2), np.float32), -1.0)
    with pytest.raises(ValueError):
        fit_content_map([], np.ones((0, 2), np.float32))


def test_content_vectors_unit_length_cosine() -> None:
    items: list[It | Bare] = [It({"a": 1.0, "b": 0.0}, ("x",)), It({"a": 1.0, "b": 0.0}, ("x",)),
             It({"a": -1.0, "b": 2.0}), Bare()]  # fmt: skip
    cmap = fit_content_map(items[:3], np.ones((3, 2), np.float32))
    v = content_vectors(cmap, items)
    assert v.shape == (4, cmap.width) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v[:3], axis=1), 1, rtol=1e-6)
    assert (v[3] == 0).all()
    assert float(v[0] @ v[1]) == pytest.approx(1.0)
    assert float(v[0] @ v[2]) < 0


def test_map_refuses_inconsistent_arrays() -> None:
    from streamrec.errors import ArtifactError

    z = np.zeros(2, np.float32)
    with pytest.raises(ArtifactError):
        ContentMap(("a", "b"), (), z, z, np.zeros((2, 4), np.float32))  # needs 3 rows
    with pytest.raises(ArtifactError):
        ContentMap(("a", "b"), (), z, z, np.zeros((3, 4), np.float32))  # scale 0
    with pytest.raises(ArtifactError):
        ContentMap(("a", "b"), (), z, np.ones(2), np.zeros((3, 4), np.float32))  # type: ignore[arg-type]  # float64


def test_match_norms_keeps_directions() -> None:
    from streamrec.als.content import match_norms

    reference = np.array([[3.0, 4.0], [0.0, 1.0]], np.float32)  # mean norm 3
    mapped = np.array([[0.1, 0.0], [0.0, -0.5], [0.0, 0.0]], np.float32)
    got = match_norms(mapped, reference)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [[3.0, 0.0], [0.0, -3.0], [0.0, 0.0]], rtol=1e-6)
