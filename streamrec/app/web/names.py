"""Display names of items for the demo page: a names file, the labels of the generated
dataset's ids, and the names that come with a model.

Pure: reads files only (no Redis, no HTTP). Imports the floor (``streamrec.errors``,
``streamrec.files``) and, for type hints only, ``streamrec.artifact``.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from streamrec.errors import InputError
from streamrec.files import open_text

if TYPE_CHECKING:
    from streamrec.artifact import Model

log = logging.getLogger(__name__)

#: Names a model directory may carry beside its factors.
NAMES_FILE = "item_names.json"

# The generated dataset's ids (model/data.py: synthetic) look like g03-track-0117.
SYNTHETIC_ID = re.compile(r"^g(\d{2})-track-(\d{4})$")
GENRES = (
    "Ambient",
    "Blues",
    "Classical",
    "Country",
    "Electronic",
    "Folk",
    "Hip-hop",
    "Jazz",
    "Metal",
    "Pop",
    "Reggae",
    "Rock",
)


def synthetic_label(item_id: str) -> str | None:
    """``g03-track-0117`` -> ``Track 117 · Country``; None for other ids."""
    m = SYNTHETIC_ID.match(item_id)
    if m is None:
        return None
    g = int(m.group(1))
    genre = GENRES[g] if g < len(GENRES) else f"Genre {g}"
    return f"Track {int(m.group(2))} · {genre}"


def load_names(path: Path) -> dict[str, str]:
    """Item id -> display name from a names file.

    Accepted: a JSON object ``{item_id: name}``; or a CSV/TSV (``.gz`` allowed) with a header
    whose first column is the id and whose name is the column called ``name``/``title`` (else
    the second one), e.g. MovieLens ``movies.csv`` or HetRec Last.fm ``artists.dat``.
    Raises InputError if the file is missing or unreadable (exit 4).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such names file")
    try:
        if path.suffix == ".json":
            obj = json.loads(path.read_text("utf-8"))
            if not isinstance(obj, dict):
                raise ValueError("expected a JSON object {item_id: name}")
            return {str(k): str(v) for k, v in obj.items()}
        with open_text(path, errors="replace") as f:
            first = f.readline()
            delim = "\t" if "\t" in first else ","
            header = [h.strip().lower() for h in next(csv.reader([first], delimiter=delim))]
            if len(header) < 2:
                raise ValueError("expected at least two columns: id and name")
            col = next((header.index(n) for n in ("name", "title", "item_name") if n in header), 1)
            names: dict[str, str] = {}
            for row in csv.reader(f, delimiter=delim):
                if len(row) > col and row[0].strip():
                    names[row[0].strip()] = row[col].strip()
            return names
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
        raise InputError(f"{path}: not a names file ({exc})") from None


def names_for_model(model: Model) -> dict[str, str]:
    """Names that come with a model: ``item_names.json`` in its directory, or the Last.fm
    ``artists.dat[.gz]`` beside the data it was trained on; {} (logged) when unreadable."""
    own = model.path / NAMES_FILE
    try:
        if own.is_file():
            return load_names(own)
        source = str(model.manifest.get("source", ""))
        if source.startswith("lastfm-2k:"):
            data_dir = Path(source.partition(":")[2])
            for name in ("artists.dat", "artists.dat.gz"):
                if (data_dir / name).is_file():
                    return load_names(data_dir / name)
    except InputError as exc:
        log.warning("no item names: %s", exc)
    return {}
