"""The wheel: only ``streamrec`` at the top of site-packages, and it runs from anywhere.

Builds the real wheel from this checkout (pip, the same as ``pip install .``), so a packaging
change that drops a data file or installs a generic top-level name fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # A copy of the tracked files (symlinks kept): the build leaves build/ and *.egg-info in
    # the tree it builds, and a stale build/ of the checkout must not leak into the wheel.
    src = out / "src"
    tracked = (
        subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, tracked):
        target = src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        source = ROOT / name
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        elif source.is_file():
            shutil.copy2(source, target)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(src)],
        check=True,
        timeout=300,
    )
    (path,) = out.glob("streamrec-*.whl")
    return path


def test_the_wheel_installs_only_streamrec_at_the_top(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"streamrec"}
    for needed in (
        "streamrec/worker/loop.py",
        "streamrec/producer/producer.py",
        "streamrec/model/retrain.py",
        "streamrec/als/foldin.py",
        "streamrec/schema/interaction-v1.avsc",
        "streamrec/schema/redis/recs.schema.json",  # the front-end kit's schemas
        "streamrec/client.py",
        "streamrec/infra/pom.xml",
    ):
        assert needed in names, needed
    assert any(n.startswith("streamrec/app/") and n.endswith("index.html") for n in names)


def test_the_installed_cli_runs_beside_a_folder_named_model(wheel: Path, tmp_path: Path) -> None:
    """Run from a folder with its own ``model`` package (the reported failure:
    ``No module named 'model.data'``), the installed CLI still finds its own modules."""
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    subprocess.run(
        [*pip, "--target", str(site), str(wheel)],
        check=True,
        timeout=300,
    )
    work = tmp_path / "work"
    for name in ("model", "worker", "producer"):
        (work / name).mkdir(parents=True)
        (work / name / "__init__.py").write_text("raise ImportError('the wrong package')\n")
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = tmp_path / "m"
    train = ["train", "--dataset", "synthetic", "--out", str(out), "--factors", "8"]
    run = subprocess.run(
        [sys.executable, "-m", "streamrec", *train, "--iterations", "2"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert (out / "manifest.json").is_file()
    assert (
        str(site)
        in subprocess.run(
            [sys.executable, "-c", "import streamrec.model.data as d; print(d.__file__)"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    )


def test_the_front_end_kit_runs_with_only_redis_and_orjson(wheel: Path, tmp_path: Path) -> None:
    """``pip install --no-deps streamrec redis orjson`` is enough for ``streamrec.client``:
    the wheel without its dependencies, redis-py and orjson beside it, and Python without its
    site-packages (``-S``), so numpy, scipy, implicit, confluent-kafka, pydantic are absent."""
    import orjson
    import redis

    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
         str(wheel)],
        check=True, timeout=300,
    )  # fmt: skip
    for module in (redis, orjson):  # the two it needs, as installed here
        source = Path(module.__file__ or "").parent
        (site / source.name).symlink_to(source)
    code = (
        f"import sys; sys.path.insert(0, {str(site)!r})\n"
        "for name in ('numpy', 'scipy', 'implicit', 'confluent_kafka', 'pydantic'):\n"
        "    try:\n"
        "        __import__(name)\n"
        "        raise SystemExit(name + ' is importable: the check proves nothing')\n"
        "    except ImportError:\n"
        "        pass\n"
        "from streamrec.client import Client, schema\n"
        'values = {\'streamrec:popular\': b\'{"items": [{"item_id": "a", "score": 1.0}], \'\n'
        '          b\'"model_version": "v", "updated_at_ms": 1}\'}\n'
        "r = Client(values).recommendations('new-user')\n"
        "print(r.source, r.items[0].item_id, schema('recs')['title'])\n"
    )
    run = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "popular a streamrec user list"
