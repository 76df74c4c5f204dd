"""ALS hyper-parameters and their defaults, defined once (the CLI's help text shows these).

No numeric imports here: the CLI reads the defaults when it builds its parser, and a process
that only parses ``worker`` must not load implicit or scipy for that.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamrec.feedback import Transform
from streamrec.model.errors import ModelError


@dataclass(frozen=True)
class Params:
    """ALS hyper-parameters; ``alpha`` scales confidences exactly as implicit's ``alpha``."""

    factors: int = 64
    regularization: float = 0.5
    alpha: float = 4.0
    iterations: int = 15
    transform: Transform = "log"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.factors < 1 or self.iterations < 1:
            raise ModelError("factors and iterations must be >= 1")
        if self.regularization < 0 or self.alpha <= 0:
            raise ModelError("regularization must be >= 0 and alpha > 0")
