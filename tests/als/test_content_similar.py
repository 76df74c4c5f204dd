"""Similar items blended from factor cosine and content cosine: known answers."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.als.similar import blend_rows, blended_neighbours, neighbours, unit_rows

# Items 0..4. By factors, 1 is item 0's twin and 2 is near; by content, 3 is item 0's twin.
FACTORS = np.array([[1, 0], [1, 0.05], [0.8, 0.6], [0, 1], [-1, 0]], np.float32)
CONTENT = unit_rows(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0], [0.6, 0.8, 0]]))
ROWS = np.array([0], np.int64)


def test_weight_zero_is_the_factor_neighbours() -> None:
    unit = unit_rows(FACTORS)
    items, scores = blended_neighbours(unit, CONTENT, ROWS, 4, 0.0)
    f_items, f_scores = neighbours(unit, ROWS, 4)
    assert items.tolist() == f_items.tolist() == [[1, 2, 3, 4]]
    np.testing.assert_allclose(scores, f_scores, rtol=1e-6)


def test_weight_one_is_the_content_neighbours() -> None:
    items, scores = blended_neighbours(unit_rows(FACTORS), CONTENT, ROWS, 2, 1.0)
    assert items.tolist() == [[3, 4]]
    np.testing.assert_allclose(scores, [[1.0, 0.6]], rtol=1e-6)


def test_half_blend_scores_by_hand() -> None:
    unit = unit_rows(FACTORS)
    items, scores = blended_neighbours(unit, CONTENT, ROWS, 4, 0.5)
    cos_f = unit[1:] @ unit[0]
    cos_c = CONTENT[1:] @ CONTENT[0]
    want = 0.5 * cos_f + 0.5 * cos_c
    order = np.argsort(-want)
    assert items[0].tolist() == (order + 1).tolist()
    np.testing.assert_allclose(scores[0], want[order], rtol=1e-5)
    assert items[0, 0] == 3  # content twin (0.5 * 0 + 0.5 * 1) beats factor twin's 0.5 * ~1


def test_blocked_and_self_excluded_and_rows_unit() -> None:
    unit = unit_rows(FACTORS)
    items, _ = blended_neighbours(unit, CONTENT, np.array([0, 3], np.int64), 5, 0.3,
                                  blocked=np.array([1], np.int64))  # fmt: skip
    assert 1 not in items.tolist()[0] and 0 not in items[0].tolist()
    assert 3 not in items[1].tolist()
    assert items[:, -2:].tolist() == [[-1, -1], [-1, -1]]  # 5 asked, 3 allowed: padded
    np.testing.assert_allclose(np.linalg.norm(blend_rows(unit, CONTENT, 0.3), axis=1), 1, 1e-6)


def test_bad_blend_input() -> None:
    with pytest.raises(ValueError):
        blend_rows(unit_rows(FACTORS), CONTENT, 1.5)
    with pytest.raises(ValueError):
        blend_rows(unit_rows(FACTORS), CONTENT[:3], 0.5)
