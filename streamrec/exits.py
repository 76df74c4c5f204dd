"""Exit statuses of every ``streamrec`` command: the one table operators and schedulers read.

======  ===============  =======================================================================
status  name             what it means for an operator
======  ===============  =======================================================================
0       ``OK``           done; a worker, loadgen or ``retrain --at`` stopped by SIGTERM/SIGINT
                         after its batch also exits 0
1       (none)           not streamrec's: an unexpected exception (a bug), with a traceback
2       ``USAGE``        a bad argument or setting (one line on stderr): an unknown flag, a
                         malformed ``STREAMREC_*`` value, a missing ``STREAMREC_CONFIG`` or
                         ``*_FILE`` file; fix the command line, the environment or the config
                         file, retrying won't help
3       ``INFRA``        Kafka or Redis is down, unreachable or not ready in time, some events
                         were not delivered, or ``infra status`` found a service not running;
                         retry once the service is back
4       ``DATA``         bad input: a data file, model directory or event that is missing,
                         malformed or fails verification (``--csv``, ``replay PATH``,
                         ``--model``, ``--names``, ``model rollback VERSION``); retrying won't
                         help
5       ``KEPT``         ``retrain``: the candidate failed the gate and the live model keeps
                         serving; a verdict, not a failure (a scheduler must not retry it)
6       ``TOPICS``       the worker (or ``topics check``) refused to start: a topic is missing
                         (run ``streamrec topics create``) or the events topic is
                         under-replicated (the line names the partitions and brokers); fix
                         the cluster, retrying alone won't help
7       ``AUTH``         a service refused streamrec's credentials (a wrong Redis password, a
                         Kafka SASL login refused): retrying won't help until they are fixed
130     ``INTERRUPTED``  interrupted: Ctrl-C (128 + SIGINT), or a replay stopped by a signal
                         before its last event
======  ===============  =======================================================================

Which error is which status is ``status_of`` (the ``ERRORS`` table below, most specific class
first), used by ``streamrec.app.cli.main`` for every command; the nightly job
(``streamrec.model.retrain``) returns ``KEPT``. Changing a number breaks deploy files
(``deploy/k8s/retrain-cronjob.yaml`` ends the Job at once on 5, 2, 4 and 7) and operators'
alerts: add, never renumber.
"""

from __future__ import annotations

from enum import IntEnum

from streamrec.errors import (
    ArtifactError,
    AuthError,
    ConfigError,
    EventError,
    InfraError,
    InputError,
    StreamrecError,
    TopicsError,
)


class Exit(IntEnum):
    """A process exit status (an ``int``: ``sys.exit(Exit.KEPT)`` exits 5)."""

    OK = 0
    USAGE = 2
    INFRA = 3
    DATA = 4
    KEPT = 5
    TOPICS = 6
    AUTH = 7
    INTERRUPTED = 130


#: Error class -> status, most specific first: the first class an error is an instance of wins
#: (``AuthError`` is an ``InfraError``; ``model.errors.DataError`` an ``InputError``).
ERRORS: tuple[tuple[type[BaseException], Exit], ...] = (
    (ConfigError, Exit.USAGE),
    (TopicsError, Exit.TOPICS),
    (AuthError, Exit.AUTH),
    (InfraError, Exit.INFRA),
    (InputError, Exit.DATA),
    (ArtifactError, Exit.DATA),
    (EventError, Exit.DATA),
    (StreamrecError, Exit.DATA),  # any other error raised on purpose: training failed on the data
    (KeyboardInterrupt, Exit.INTERRUPTED),
)


def status_of(exc: BaseException) -> Exit | None:
    """The exit status for ``exc``; None for an error that is not streamrec's (a bug: exit 1
    with its traceback)."""
    for cls, status in ERRORS:
        if isinstance(exc, cls):
            return status
    return None
