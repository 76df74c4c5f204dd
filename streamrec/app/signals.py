"""Stopping cleanly on SIGTERM and SIGINT: the long-running commands' one signal handler.

Imports nothing of streamrec; ``commands`` and ``demo`` use it.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

log = logging.getLogger(__name__)


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGTERM and SIGINT only set ``stop``; the loop finishes its batch and exits cleanly.

    Only from the main thread (Python delivers signals there).
    """

    def handler(signum: int, _frame: Any) -> None:
        log.info("got %s, stopping after this batch", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
