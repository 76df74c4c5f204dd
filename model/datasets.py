"""The named datasets ``streamrec.model.data.load_dataset`` knows, defined once (the CLI's
``--dataset`` choices come from here). No numeric imports: the CLI reads them when it builds
its parser."""

from __future__ import annotations

from collections.abc import Mapping

#: Names ``load_dataset`` knows; every one but ``synthetic`` reads files from a data directory.
DATASETS: tuple[str, ...] = ("synthetic", "lastfm-2k", "ml-latest-small", "ml-100k", "ml-1m")
#: The folder each dataset unpacks to; ``load_dataset`` looks in ``data_dir`` and in this one.
DATASET_FOLDERS: Mapping[str, str] = {
    "lastfm-2k": "hetrec2011-lastfm-2k",
    "ml-latest-small": "ml-latest-small",
    "ml-100k": "ml-100k",
    "ml-1m": "ml-1m",
}
