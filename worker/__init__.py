"""The streaming worker: Kafka events in, each touched user's top-N list in Redis out.

Stages of one micro-batch (``loop.Worker``)::

    source.poll        Kafka -> a bounded batch of messages             (source.py)
    decode             bytes -> events, or the reason they are not      (decode.py)
    Batch              its partitions, users and Redis keys, once       (batch.py)
    sink.watch_read    WATCH + MGET applied offsets and user states     (streamrec.sink)
    skip               messages at or below their partition's applied offset
    dead letters       the undecodable rest to the DLQ, delivered       (decode.py)
    history            events applied to the users' states              (streamrec.als.history)
    scorer             fold-in + top-N of the touched users             (streamrec.als.scorer)
                       (both guarded per user: a user at fault is left out, isolate.py)
    sink.write         MULTI: states, lists, applied offsets; EXEC      (streamrec.sink)
    source.commit      Kafka offsets, only after EXEC                   (source.py)

Before the first batch: ``preflight.check_redis`` refuses a Redis whose ``maxmemory-policy``
can evict the worker's state. Beside the batches: ``models.ModelWatcher`` swaps in a newly
published model and reloads the blocked items between them; ``rebuild.StateGuard`` decides
where assigned partitions resume (what Redis reflects), notices a state Redis lost and
rebuilds it from the topic (it takes those partitions' messages until their histories are
back, then writes their lists); ``metrics`` holds the counts (``Stats``) and exports them,
with stage timings, on ``/metrics`` and ``/healthz``. ``seams`` names what the loop needs of
its source, sink and dead-letter writer, so tests can hand it others. ``retry`` waits out an
outage of Redis or Kafka: the model check and each batch are run again, from their start,
until they get through (or the worker is stopped).

Imports: the contracts of ``streamrec`` (events, keys, artifact, settings, errors, connect,
sink, ...) and the ALS core ``streamrec.als`` only; never ``streamrec.app``, ``.model``,
``.producer`` or ``.infra`` (the import-linter layers in pyproject.toml).
"""
