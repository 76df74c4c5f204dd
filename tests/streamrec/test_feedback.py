"""The feedback score shared by worker and trainer."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.feedback import confidence, decay, event_weight


@pytest.mark.parametrize(
    ("type", "value", "expected"),
    [
        ("play", None, 1.0),
        ("play", 30.0, 1.0),  # the reference length weighs the base weight
        ("play", 90.0, 2.0),  # log-scaled: log2(1 + 90/30)
        ("play", 100_000.0, 4.0),  # capped
        ("view", 10.0, 0.25),
        ("click", 99.0, 0.5),  # no value scaling for clicks
        ("rating", 5.0, 2.5),  # centred on 2.5
        ("rating", 1.0, -1.5),
        ("skip", 3.0, -0.5),
        ("skip", 45.0, 0.0),
        ("dislike", None, -2.0),
        ("purchase", None, 3.0),
    ],
)
def test_event_weight(type: str, value: float | None, expected: float) -> None:
    assert event_weight(type, value) == pytest.approx(expected)


def test_custom_weights() -> None:
    assert event_weight("like", None, {"like": 5.0}) == 5.0
    assert event_weight("play", None, {"like": 5.0}) == 0.0


def test_decay() -> None:
    assert decay(8.0, 30.0, 10.0) == pytest.approx(1.0)
    assert decay(8.0, 30.0, None) == 8.0
    assert decay(8.0, -5.0, 10.0) == 8.0


def test_confidence_keeps_sign() -> None:
    np.testing.assert_allclose(
        confidence(np.array([0.0, 9.0, -3.0])), [0.0, np.log(10), -np.log(4)], rtol=1e-6
    )
    assert confidence(np.array([2.0]), "linear").tolist() == [2.0]
    with pytest.raises(ValueError, match="transform"):
        confidence(np.array([1.0]), "cube")  # type: ignore[arg-type]
