"""streamrec: Kafka events -> exact ALS fold-in -> top-N lists in Redis.

One package, in layers; each imports only those below it (checked by ``make lint``, the
import-linter contract in ``pyproject.toml``)::

    streamrec.app        CLI, commands, demo, web server             (the roof)
    streamrec.worker     the streaming worker        \\
    streamrec.producer   publishing events           |  each imports only the floor,
    streamrec.model      the nightly job             |  never one another
    streamrec.infra      local Kafka + Redis for dev /  (imported by the app only)
    streamrec.client     the front-end kit: reads contract 2 (keys) without the ALS side
    streamrec.als        the shared ALS core: fold-in, top-N, scoring, history, similarity
    streamrec.*          contracts: events (+ schema/), keys, artifact, feedback, settings,
                         errors, exits, connect, sink, files                      (the floor)

``worker/``, ``producer/`` and ``model/`` sit at the repository's root and are linked into
this folder (``streamrec/worker -> ../worker``), so they install as ``streamrec.worker`` etc.
"""

__version__ = "0.1.0"
