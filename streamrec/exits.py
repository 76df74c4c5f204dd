"""Exit statuses of every ``streamrec`` command: the one table operators and schedulers read.

======  ===============  =======================================================================
status  name             what it means for an operator
======  ===============  =======================================================================
0       ``OK``           done; a worker, loadgen or ``retrain --at`` stopped by SIGTERM/SIGINT
                         after its batch also exits 0
1       (none)           not streamrec's: an unexpected exception (a bug), with a traceback
2       ``USAGE``        a bad argument or setting (one line on stderr); fix the command line,
                         the environment or the ``STREAMREC_CONFIG`` file, retrying won't help
3       ``INFRA``        Kafka or Redis is down, unreachable or not ready in time, some events
                         were not delivered, or ``infra status`` found a service not running;
                         retry once the service is back
4       ``DATA``         bad input: a data file, model directory or event that is missing,
                         malformed or fails verification; retrying won't help
5       ``KEPT``         ``retrain``: the candidate failed the gate and the live model keeps
                         serving; a verdict, not a failure (a scheduler must not retry it)
6       ``TOPICS``       the worker (or ``topics check``) refused to start: a topic is missing
                         (run ``streamrec topics create``) or the events topic is
                         under-replicated (the line names the partitions and brokers); fix
                         the cluster, retrying alone won't help
7       ``AUTH``         Kafka refused the credentials or the TLS handshake (wrong SASL user or
                         password, an untrusted or missing certificate): one line naming the
                         broker and librdkafka's reason; fix the ``kafka_sasl_*`` /
                         ``kafka_ssl_*`` settings, retrying won't help
130     ``INTERRUPTED``  interrupted: Ctrl-C (128 + SIGINT), or a replay stopped by a signal
                         before its last event
======  ===============  =======================================================================

``streamrec.app.cli.main`` maps the error classes of ``streamrec.errors`` to 2-4, 6 and 7; the
nightly job (``streamrec.model.retrain``) returns ``KEPT``. Changing a number breaks deploy files
(``deploy/k8s/retrain-cronjob.yaml`` ends the Job at once on 5, 2, 4 and 7) and operators'
alerts: add, never renumber.
"""

from __future__ import annotations

from enum import IntEnum


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
