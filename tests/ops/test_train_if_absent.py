"""``streamrec train --if-absent`` (the compose trainer and the Kubernetes first-model Job):
run on every start, it trains and publishes only while no model is published, so a promoted
model is never replaced and the pointer never moved back. Real Redis and Kafka."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from streamrec.app.cli import main
from streamrec.connect import redis_client
from streamrec.keys import Keys, read_model_pointer
from streamrec.settings import Settings
from tests.conftest import export_settings

pytestmark = pytest.mark.integration


def test_train_if_absent_never_replaces_a_published_model(
    stack: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s = stack()
    export_settings(monkeypatch, s, "redis_prefix", "topic_models", "topic_items", "topic_events")
    client, keys = redis_client(s), Keys(s.redis_prefix)
    first = tmp_path / "current"
    argv = ["train", "--dataset", "synthetic", "--factors", "8", "--iterations", "2",
            "--out", str(first), "--publish", "--if-absent"]  # fmt: skip

    assert main(argv) == 0  # nothing published: trains and publishes
    pointer = read_model_pointer(client, keys)
    assert pointer is not None and pointer.path == first
    manifest = (first / "manifest.json").read_bytes()

    # The nightly job promoted another version since: `docker compose up` again must keep it.
    promoted = tmp_path / "v2"
    assert main(["train", "--dataset", "synthetic", "--factors", "8", "--iterations", "2",
                 "--seed", "7", "--out", str(promoted), "--publish"]) == 0  # fmt: skip
    live = read_model_pointer(client, keys)
    assert live is not None and live.path == promoted and live.version != pointer.version
    capsys.readouterr()
    assert main(argv) == 0
    assert "nothing to do (--if-absent)" in capsys.readouterr().out
    assert read_model_pointer(client, keys) == live  # the pointer did not move back
    assert (first / "manifest.json").read_bytes() == manifest  # nor was the model rewritten

    # A pointer naming a directory that is gone (a dropped volume) is no model: train again.
    shutil.rmtree(promoted)
    assert main(argv) == 0
    again = read_model_pointer(client, keys)
    assert again is not None and again.path == first and again.version != live.version
