"""The local Apache Kafka broker: one KRaft node that is both broker and controller, or a
cluster of such nodes on loopback (``kafka_brokers`` > 1; see "A cluster of nodes" below).

Jars come from Maven Central through ``mvn dependency:copy-dependencies`` (see ``pom.xml`` next
to this module) into ``<home>/kafka/<version>/libs``, once. Each broker port gets its own run
directory, ``<home>/kafka/run-<port>``, with the rendered ``server.properties``, the log4j2
configuration, KRaft storage under ``data/`` (formatted on first start) and logs under ``logs/``.

``up(..., security=BrokerSecurity(...))`` adds TLS and SASL listeners beside the PLAINTEXT one
and creates SCRAM users when the storage is formatted: the security tests' broker
(``tests/security/conftest.py``); ``streamrec infra up`` never does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamrec.errors import InfraError
from streamrec.infra import (
    POLL_S,
    Action,
    Echo,
    How,
    ServiceStatus,
    decide,
    is_loopback,
    kill_pid,
    our_pid,
    pid_alive,
    port_open,
    spawn_detached,
    stop_pid,
    tail,
    wait_port_closed,
    write_pid,
)

if TYPE_CHECKING:
    from streamrec.settings import Settings

log = logging.getLogger(__name__)

NAME = "kafka"
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
MIN_JAVA = 17
MVN_TIMEOUT_S = 600.0
TOOL_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 3.0
XMS_BYTES = 256 * 1024**2
_VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.\-]*$")
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_HEAP_RE = re.compile(r"^(\d+)([kmgt]?)$", re.IGNORECASE)


# --- Paths and pure rendering --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KafkaPaths:
    """Every file the local broker uses, derived from the settings."""

    version_dir: Path
    run_dir: Path

    @classmethod
    def of(cls, settings: Settings) -> KafkaPaths:
        version = settings.kafka_version
        if not _VERSION_RE.match(version):
            raise InfraError(f"kafka: bad kafka_version {version!r}")
        kafka_home = settings.home / "kafka"
        return cls(kafka_home / version, kafka_home / f"run-{settings.kafka_port}")

    @property
    def libs(self) -> Path:
        return self.version_dir / "libs"

    @property
    def libs_ok(self) -> Path:
        """Marker written after a complete copy of the jars into ``libs``."""
        return self.version_dir / "libs.ok"

    @property
    def pom(self) -> Path:
        return self.version_dir / "pom.xml"

    @property
    def classpath(self) -> str:
        """``libs/*``: java expands the wildcard itself (no shell involved)."""
        return f"{self.libs}/*"

    @property
    def server_properties(self) -> Path:
        return self.run_dir / "server.properties"

    @property
    def log4j(self) -> Path:
        return self.run_dir / "log4j2.properties"

    @property
    def data(self) -> Path:
        return self.run_dir / "data"

    @property
    def logs(self) -> Path:
        return self.run_dir / "logs"

    @property
    def server_log(self) -> Path:
        return self.logs / "server.log"

    @property
    def stdout_log(self) -> Path:
        """The JVM's own stdout/stderr (crashes before log4j starts land here)."""
        return self.logs / "stdout.log"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "kafka.pid"


def split_bootstrap(bootstrap: str) -> tuple[str, int, bool]:
    """(host, port, single) of the first server in ``bootstrap``; host keeps IPv6 brackets."""
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return host, int(port), "," not in bootstrap.strip(",")


def listen_host(host: str) -> str:
    """The host the local listeners bind to: ``localhost`` becomes 127.0.0.1."""
    return "127.0.0.1" if host.lower() == "localhost" else host


def render_server_properties(
    host: str,
    port: int,
    controller_port: int,
    data_dir: Path,
    *,
    node_id: int = 1,
    voters: str | None = None,
    replicas: int = 1,
) -> str:
    """server.properties of a combined broker+controller node on ``host``: the single node
    (defaults), or node ``node_id`` of a cluster whose static controller quorum is ``voters``
    (``controller.quorum.voters``, see ``quorum_voters``), its internal topics (consumer
    offsets, transactions) with ``replicas`` copies."""
    quorum = (
        {"controller.quorum.voters": voters}
        if voters
        else {"controller.quorum.bootstrap.servers": f"{host}:{controller_port}"}
    )
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        **quorum,
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        # The worker group's offsets live there: one copy would make that broker's loss stall
        # every consumer group whose coordinator it was.
        "offsets.topic.replication.factor": str(replicas),
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(min(2, replicas)),
        "group.initial.rebalance.delay.ms": "0",
        # Topics are created explicitly by streamrec, with the partition counts it wants.
        "auto.create.topics.enable": "false",
        # Light enough for a 2-core machine.
        "num.network.threads": "2",
        "num.io.threads": "4",
        "log.retention.hours": "168",
    }
    head = "# Written by streamrec.infra.kafka; rewritten on every start.\n"
    return head + "".join(f"{k}={_escape_value(v)}\n" for k, v in props.items())


# --- Security: extra listeners and SCRAM users (tests of TLS and SASL) ---------------------


@dataclass(frozen=True, slots=True)
class SecureListener:
    """A listener of the local broker beside its PLAINTEXT one, for clients that use TLS or SASL.

    ``protocol``: SSL, SASL_SSL or SASL_PLAINTEXT. ``keystore``: a PEM file holding the broker's
    private key (PKCS#8, unencrypted) and its certificate chain; ``truststore``: a PEM file of
    the CA(s) whose client certificates it accepts; ``client_auth``: none, requested or
    required (mTLS). SASL listeners accept SCRAM-SHA-256, SCRAM-SHA-512 (users created at
    format time, ``ScramUser``) and PLAIN (``plain_users``, name -> password, in the JAAS
    configuration of server.properties).
    """

    name: str
    port: int
    protocol: str
    keystore: Path | None = None
    truststore: Path | None = None
    client_auth: str = "none"
    plain_users: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScramUser:
    """A SCRAM credential written into the KRaft metadata when the storage is formatted."""

    mechanism: str  # SCRAM-SHA-256 or SCRAM-SHA-512
    name: str
    password: str

    def format_arg(self) -> str:
        """The value of ``kafka-storage format --add-scram``."""
        return f"{self.mechanism}=[name={self.name},password={self.password}]"


@dataclass(frozen=True, slots=True)
class BrokerSecurity:
    """Extra listeners and SCRAM users of a local broker (``up(..., security=...)``)."""

    listeners: Sequence[SecureListener] = ()
    scram_users: Sequence[ScramUser] = ()


SASL_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")
_SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
_PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule required"


def secure_properties(
    props: Mapping[str, str], host: str, security: BrokerSecurity
) -> dict[str, str]:
    """``props`` (a node's server.properties) with ``security``'s listeners added: each one in
    ``listeners``, ``advertised.listeners`` and the protocol map, with its TLS material and
    SASL mechanisms under ``listener.name.<name>.*``. The PLAINTEXT listener, the controller
    and inter-broker traffic stay as they are."""
    out = dict(props)
    for lst in security.listeners:
        name, prefix = lst.name.upper(), f"listener.name.{lst.name.lower()}."
        out["listeners"] += f",{name}://{host}:{lst.port}"
        out["advertised.listeners"] += f",{name}://{host}:{lst.port}"
        out["listener.security.protocol.map"] += f",{name}:{lst.protocol}"
        if lst.protocol in ("SSL", "SASL_SSL"):
            if lst.keystore is None:
                raise InfraError(f"kafka: listener {name} ({lst.protocol}) needs a keystore")
            out[prefix + "ssl.keystore.type"] = "PEM"
            out[prefix + "ssl.keystore.location"] = str(lst.keystore)
            if lst.truststore is not None:
                out[prefix + "ssl.truststore.type"] = "PEM"
                out[prefix + "ssl.truststore.location"] = str(lst.truststore)
            out[prefix + "ssl.client.auth"] = lst.client_auth
        if lst.protocol.startswith("SASL_"):
            out[prefix + "sasl.enabled.mechanisms"] = ",".join(SASL_MECHANISMS)
            for mech in SASL_MECHANISMS[:2]:
                out[prefix + f"{mech.lower()}.sasl.jaas.config"] = _SCRAM_MODULE
            users = "".join(f' user_{u}="{pw}"' for u, pw in lst.plain_users.items())
            out[prefix + "plain.sasl.jaas.config"] = f"{_PLAIN_MODULE}{users};"
    return out


def _escape_value(value: str) -> str:
    """Escape a value for java.util.Properties (backslashes matter for Windows-ish paths)."""
    return value.replace("\\", "\\\\")


def parse_properties(text: str) -> dict[str, str]:
    """key=value lines of a simple .properties file (no continuation lines)."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().replace("\\\\", "\\")
    return out


def render_pom(template: str, version: str) -> str:
    """The shipped pom.xml template with the Kafka version filled in."""
    if "@KAFKA_VERSION@" not in template:
        raise InfraError("kafka: pom.xml template lacks @KAFKA_VERSION@")
    return template.replace("@KAFKA_VERSION@", version)


def parse_heap(heap: str) -> int:
    """Bytes in a JVM size such as ``768m`` or ``2g``; InfraError when malformed."""
    m = _HEAP_RE.match(heap.strip())
    if not m:
        raise InfraError(f"kafka: bad kafka_heap {heap!r} (expected e.g. 768m or 2g)")
    scale = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[m.group(2).lower()]
    return int(m.group(1)) * scale


def java_command(java: str, paths: KafkaPaths, heap: str) -> list[str]:
    """The broker's argv. -Xms is 256m, or the heap itself when that is smaller."""
    xmx = heap.strip()
    xms = "256m" if parse_heap(xmx) >= XMS_BYTES else xmx
    return [
        java,
        f"-Xmx{xmx}",
        f"-Xms{xms}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={paths.log4j}",
        f"-Dkafka.logs.dir={paths.logs}",
        "-cp",
        paths.classpath,
        MAIN_CLASS,
        str(paths.server_properties),
    ]


def first_maven_error(output: str) -> str:
    """The first meaningful ``[ERROR]`` line of Maven's output (ANSI codes removed)."""
    lines = [_ANSI_RE.sub("", line).strip() for line in output.splitlines()]
    for line in lines:
        if line.startswith("[ERROR]") and line[len("[ERROR]") :].strip():
            return line[len("[ERROR]") :].strip()
    return next((line for line in reversed(lines) if line), "no output")


def parse_java_major(version_output: str) -> int | None:
    """The major version in ``java -version`` output (``1.8.0_x`` -> 8, ``17.0.15`` -> 17)."""
    m = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


# --- Java, Maven, storage ------------------------------------------------------------------


def find_java() -> str:
    """The java binary ($JAVA_HOME/bin/java, else PATH), checked to be Java 17+."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    java = str(candidate) if candidate and candidate.is_file() else shutil.which("java")
    if not java:
        raise InfraError(
            "kafka: java not found; install OpenJDK 17 or newer "
            "(Debian/Ubuntu: apt-get install openjdk-17-jre-headless)"
        )
    try:
        proc = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InfraError(f"kafka: `{java} -version` failed: {exc}") from None
    major = parse_java_major(proc.stderr + proc.stdout)
    if major is not None and major < MIN_JAVA:
        raise InfraError(
            f"kafka: {java} is Java {major}; Kafka 4 needs Java {MIN_JAVA}+, install OpenJDK 17"
        )
    return java


def ensure_jars(settings: Settings, paths: KafkaPaths, echo: Echo) -> None:
    """Fetch the broker's jars into ``paths.libs`` with Maven unless a complete copy exists."""
    if paths.libs_ok.is_file() and paths.libs.is_dir():
        return
    mvn = shutil.which("mvn")
    if not mvn:
        raise InfraError(
            "kafka: mvn not found; install Maven 3.6+ (Debian/Ubuntu: apt-get install maven) "
            "so streamrec can fetch the Kafka jars from Maven Central"
        )
    paths.version_dir.mkdir(parents=True, exist_ok=True)
    template = resources.files("streamrec.infra").joinpath("pom.xml").read_text("utf-8")
    paths.pom.write_text(render_pom(template, settings.kafka_version), encoding="utf-8")
    partial = paths.version_dir / "libs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    mvn_log = paths.version_dir / "mvn.log"
    echo(f"kafka: fetching Apache Kafka {settings.kafka_version} jars with Maven into {paths.libs}")
    cmd = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(paths.pom),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={partial}",
    ]
    started = time.monotonic()
    try:
        with mvn_log.open("wb") as out:
            proc = subprocess.run(
                cmd, stdout=out, stderr=subprocess.STDOUT, timeout=MVN_TIMEOUT_S, check=False
            )
    except subprocess.TimeoutExpired:
        raise InfraError(
            f"kafka: mvn did not finish within {MVN_TIMEOUT_S:.0f} s; see {mvn_log}"
        ) from None
    if proc.returncode != 0:
        raise InfraError(
            f"kafka: mvn failed (exit {proc.returncode}) fetching Kafka {settings.kafka_version}: "
            f"{first_maven_error(tail(mvn_log, 50))} (full log: {mvn_log})"
        )
    if not list(partial.glob(f"kafka_2.13-{settings.kafka_version}.jar")):
        raise InfraError(f"kafka: mvn succeeded but {partial} lacks the kafka_2.13 jar")
    shutil.rmtree(paths.libs, ignore_errors=True)
    partial.rename(paths.libs)
    n_jars = len(list(paths.libs.glob("*.jar")))
    paths.libs_ok.write_text(f"{n_jars} jars\n", encoding="ascii")
    log.info("fetched %d jars into %s in %.1f s", n_jars, paths.libs, time.monotonic() - started)


def _run_tool(java: str, paths: KafkaPaths, *args: str) -> str:
    """Run kafka.tools.StorageTool with ``args``; its stdout, or InfraError with its output."""
    cmd = [
        java,
        "-Xmx256m",
        f"-Dlog4j2.configurationFile={paths.log4j}",
        f"-Dkafka.logs.dir={paths.logs}",
        "-cp",
        paths.classpath,
        STORAGE_TOOL,
        *args,
    ]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise InfraError(
            f"kafka: StorageTool {args[0]} timed out after {TOOL_TIMEOUT_S:.0f} s"
        ) from None
    if proc.returncode != 0:
        out = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise InfraError(f"kafka: StorageTool {args[0]} failed (exit {proc.returncode}): {out}")
    return proc.stdout


def format_storage(
    java: str, paths: KafkaPaths, echo: Echo, scram_users: Sequence[ScramUser] = ()
) -> None:
    """Format the KRaft storage in ``paths.data`` unless it already holds meta.properties;
    ``scram_users`` are created then (``--add-scram``), as SCRAM credentials live in the
    metadata log."""
    if (paths.data / "meta.properties").is_file():
        return
    lines = _run_tool(java, paths, "random-uuid").split()
    if not lines:
        raise InfraError("kafka: StorageTool random-uuid printed nothing")
    cluster_id = lines[-1]
    echo(f"kafka: formatting storage in {paths.data} (cluster id {cluster_id})")
    scram = [arg for user in scram_users for arg in ("--add-scram", user.format_arg())]
    _run_tool(
        java,
        paths,
        "format",
        "--standalone",
        "-t",
        cluster_id,
        "-c",
        str(paths.server_properties),
        *scram,
    )


# --- Probing and readiness -----------------------------------------------------------------


def _admin(settings: Settings) -> Any:
    """An AdminClient whose librdkafka logs go to our logger, not to stderr."""
    from confluent_kafka.admin import AdminClient

    conf = settings.kafka_common()
    conf["logger"] = logging.getLogger(f"{__name__}.librdkafka")
    return AdminClient(conf)


def _metadata_ok(admin: Any, timeout_s: float) -> str | None:
    """None if the cluster returns metadata listing at least one broker, else why not."""
    from confluent_kafka import KafkaException

    try:
        md = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        return err.str() if hasattr(err, "str") else str(err)
    finally:
        admin.poll(0)  # hand queued librdkafka log lines to our logger
    return None if md.brokers else "metadata lists no brokers yet"


def probe(settings: Settings, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[bool, bool, str]:
    """(healthy, port_busy, reason): does a Kafka cluster answer at ``kafka_bootstrap``?

    A closed port on a single-server bootstrap returns at once, without librdkafka.
    """
    host, port, single = split_bootstrap(settings.kafka_bootstrap)
    busy = port_open(host.strip("[]"), port)
    if single and not busy:
        return False, False, "connection refused"
    why = _metadata_ok(_admin(settings), timeout_s)
    return why is None, busy, why or ""


# A broker restarted over many partitions first recovers each log, which can take minutes
# (10,784 partitions: 61 s on this machine); its log counts them, "(6176/10784 completed in".
_LOADED = re.compile(rb"\((\d+)/(\d+) completed in ")
LOAD_CEILING_S = 900.0  # the longest any start may take while log loading still advances
PROGRESS_EVERY_S = 10.0


def log_load_progress(text: bytes) -> tuple[int, int] | None:
    """(done, total) from the last "(done/total completed in" of a server-log tail, or None."""
    found = _LOADED.findall(text)
    if not found:
        return None
    done, total = found[-1]
    return int(done), int(total)


def _tail_bytes(path: Path, size: int = 64 * 1024) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            return f.read()
    except OSError:
        return b""


def wait_ready(
    settings: Settings,
    paths: KafkaPaths,
    alive: Callable[[], bool],
    timeout_s: float,
    echo: Echo | None = None,
) -> float:
    """Poll until the broker returns metadata; seconds waited. InfraError if it dies or stalls.

    ``timeout_s`` bounds the wait since the start or since the broker last reported progress
    loading its logs (a restart over many partitions), and ``LOAD_CEILING_S`` bounds it all."""
    host, port, _ = split_bootstrap(settings.kafka_bootstrap)
    started = time.monotonic()
    deadline = started + timeout_s
    ceiling = started + max(timeout_s, LOAD_CEILING_S)
    admin: Any = None
    why = "port not open yet"
    loaded: tuple[int, int] | None = None
    told = started
    while True:
        if not alive():
            raise InfraError(
                f"kafka: the broker exited during startup; see {paths.server_log}\n"
                + _log_tails(paths)
            )
        now = time.monotonic()
        progress = log_load_progress(_tail_bytes(paths.server_log))
        if progress is not None and progress != loaded:
            loaded = progress
            deadline = min(ceiling, max(deadline, now + timeout_s))
            if echo is not None and now - told >= PROGRESS_EVERY_S:
                echo(f"kafka: loading its logs, {progress[0]}/{progress[1]} partitions")
                told = now
        remaining = deadline - now
        if port_open(host.strip("[]"), port, timeout_s=0.2):
            admin = admin if admin is not None else _admin(settings)
            why = _metadata_ok(admin, max(0.1, min(2.0, remaining))) or ""
            if not why:
                return time.monotonic() - started
        if time.monotonic() >= deadline:
            waited = time.monotonic() - started
            raise InfraError(
                f"kafka: broker not ready after {waited:.0f} s ({why}); it keeps running, "
                f"`streamrec infra down` stops it; see {paths.server_log}\n" + _log_tails(paths)
            )
        time.sleep(POLL_S)


def _log_tails(paths: KafkaPaths) -> str:
    parts = []
    for path in (paths.server_log, paths.stdout_log):
        text = tail(path, 20)
        if text:
            parts.append(f"--- last lines of {path} ---\n{text}")
    return "\n".join(parts) or "(no log output)"


# --- Service API ---------------------------------------------------------------------------


def _ours(paths: KafkaPaths) -> int | None:
    return our_pid(paths.pid_file, MAIN_CLASS, str(paths.server_properties))


def status(settings: Settings) -> ServiceStatus:
    """Whether a broker answers at ``kafka_bootstrap``, and whether it is ours."""
    paths = KafkaPaths.of(settings)
    pid = _ours(paths)
    healthy, busy, why = probe(settings)
    address = settings.kafka_bootstrap
    if pid is not None:
        detail = "" if healthy else f"process alive but not answering: {why}"
        return ServiceStatus(NAME, healthy, address, "ours", pid, paths.server_log, detail)
    if healthy:
        return ServiceStatus(NAME, True, address, "external")
    return ServiceStatus(NAME, False, address, "down", detail=why if busy else "")


def up(
    settings: Settings,
    echo: Echo,
    *,
    timeout_s: float = 60.0,
    security: BrokerSecurity | None = None,
) -> ServiceStatus:
    """Use the broker answering at ``kafka_bootstrap``, or start ours on a loopback address.

    ``security``: extra TLS/SASL listeners and SCRAM users of a broker started here (the
    security tests'); ``kafka_bootstrap`` stays its PLAINTEXT listener."""
    paths = KafkaPaths.of(settings)
    address = settings.kafka_bootstrap
    host, port, single = split_bootstrap(address)
    pid = _ours(paths)
    healthy, busy, why = probe(settings)
    action = decide(
        service=NAME,
        address=address,
        healthy=healthy,
        ours_alive=pid is not None,
        port_busy=busy,
        local=single and is_loopback(host),
        reason=why,
    )
    if action is Action.USE:
        if pid is None:
            echo(f"kafka: already running at {address} (external)")
            return ServiceStatus(NAME, True, address, "external")
        echo(f"kafka: already running at {address} (ours, pid {pid})")
        return ServiceStatus(NAME, True, address, "ours", pid, paths.server_log)
    if action is Action.WAIT and pid is not None:
        echo(f"kafka: our broker (pid {pid}) is not answering yet; waiting ({paths.server_log})")
        waited = wait_ready(settings, paths, lambda: pid_alive(pid), timeout_s, echo)
        echo(f"kafka: ready at {address} after {waited:.1f} s")
        return ServiceStatus(NAME, True, address, "ours", pid, paths.server_log)

    if settings.kafka_common()["security.protocol"] != "PLAINTEXT":
        raise InfraError(
            "kafka: streamrec starts a broker whose kafka_bootstrap listener is PLAINTEXT; "
            "unset kafka_security_protocol and kafka_sasl_username, or point kafka_bootstrap "
            "at your secured broker"
        )
    bind = listen_host(host)
    if port_open(bind.strip("[]"), settings.kafka_controller_port):
        raise InfraError(
            f"kafka: controller port {settings.kafka_controller_port} is already in use; "
            "set kafka_controller_port to a free port"
        )
    java = find_java()
    ensure_jars(settings, paths, echo)
    write_run_dir(settings, paths, bind, port, security)
    format_storage(java, paths, echo, security.scram_users if security else ())

    cmd = java_command(java, paths, settings.kafka_heap)
    echo(f"kafka: starting broker on {address}, log {paths.server_log}")
    log.info("starting %s", " ".join(cmd))
    new_pid = spawn_detached(cmd, paths.stdout_log, paths.run_dir)
    write_pid(paths.pid_file, new_pid)
    try:
        waited = wait_ready(settings, paths, lambda: pid_alive(new_pid), timeout_s, echo)
    except InfraError:
        if not pid_alive(new_pid):
            paths.pid_file.unlink(missing_ok=True)
        raise
    echo(f"kafka: ready at {address} after {waited:.1f} s (pid {new_pid})")
    return ServiceStatus(NAME, True, address, "ours", new_pid, paths.server_log)


def write_run_dir(
    settings: Settings,
    paths: KafkaPaths,
    bind: str,
    port: int,
    security: BrokerSecurity | None = None,
) -> None:
    """Write server.properties (with ``security``'s listeners) and log4j2.properties; refuse a
    controller-port change."""
    paths.logs.mkdir(parents=True, exist_ok=True)
    cport = settings.kafka_controller_port
    if (paths.data / "meta.properties").is_file() and paths.server_properties.is_file():
        old = parse_properties(paths.server_properties.read_text(encoding="utf-8"))
        old_quorum = old.get("controller.quorum.bootstrap.servers", "")
        if old_quorum and not old_quorum.endswith(f":{cport}"):
            raise InfraError(
                f"kafka: {paths.data} was formatted for controller {old_quorum}, not port "
                f"{cport}; set kafka_controller_port back, or delete {paths.run_dir} "
                "(its topics are lost)"
            )
    text = render_server_properties(bind, port, cport, paths.data)
    if security is not None and security.listeners:
        props = secure_properties(parse_properties(text), bind, security)
        head = "# Written by streamrec.infra.kafka; rewritten on every start.\n"
        text = head + "".join(f"{k}={_escape_value(v)}\n" for k, v in props.items())
    paths.server_properties.write_text(text, encoding="utf-8")
    if security is not None and security.listeners:
        paths.server_properties.chmod(0o600)  # PLAIN users' passwords are in it
    log4j = resources.files("streamrec.infra").joinpath("log4j2.properties").read_text("utf-8")
    paths.log4j.write_text(log4j, encoding="utf-8")


def down(settings: Settings, echo: Echo) -> None:
    """Stop our broker (SIGTERM, then SIGKILL after 30 s); an external one is left alone."""
    paths = KafkaPaths.of(settings)
    pid = _ours(paths)
    if pid is None:
        echo(f"kafka: no broker of ours for {settings.kafka_bootstrap}")
        return
    stop_pid(pid, NAME, STOP_TIMEOUT_S, echo)
    paths.pid_file.unlink(missing_ok=True)
    echo("kafka: stopped")


def kill(settings: Settings, echo: Echo) -> None:
    """SIGKILL our broker, as a crash would (its log is recovered at the next start); for fault
    tests and the soak benchmark. A broker that is not ours is never touched."""
    paths = KafkaPaths.of(settings)
    pid = _ours(paths)
    if pid is None:
        raise InfraError(f"kafka: no broker of ours at {settings.kafka_bootstrap} to kill")
    kill_pid(pid, NAME, echo)
    paths.pid_file.unlink(missing_ok=True)
    host, port, _ = split_bootstrap(settings.kafka_bootstrap)
    wait_port_closed(host, port, NAME)


# --- A cluster of nodes (``kafka_brokers`` > 1) ---------------------------------------------
#
# N combined broker+controller nodes on one loopback host, one static controller quorum
# (``controller.quorum.voters``: every node votes; formatted with one shared cluster id, no
# ``--standalone``). Node k (from 0, node id k + 1) takes the k-th server of kafka_bootstrap,
# or the first one's port + 2k, and its controller kafka_controller_port + 2k: with the
# defaults 9092/9093, nodes at 9092, 9094, 9096 and controllers at 9093, 9095, 9097. Files:
# ``<home>/kafka/cluster-<first port>/cluster.json`` (the cluster id and the nodes, written
# before the first format: ``status`` and ``down`` read it, so they need no flag) and
# ``node-<id>/`` (the run directory of one node, laid out as ``KafkaPaths``'s).

CLUSTER_HEAP = "512m"
"""The most heap each node of a cluster gets (``kafka_heap`` when that is smaller): three
JVMs share a developer's machine."""

CLUSTER_READY_S = 120.0
"""The longest wait for every node of a cluster to answer: N JVMs start at once."""


@dataclass(frozen=True, slots=True)
class Node:
    """One node of a local cluster: its KRaft id and its two ports."""

    node_id: int
    host: str
    port: int
    controller_port: int

    @property
    def address(self) -> str:
        """``host:port`` of its client listener."""
        return f"{self.host}:{self.port}"


def cluster_nodes(bootstrap: str, controller_port: int, brokers: int) -> list[Node]:
    """The nodes of a ``brokers``-node cluster (see the section's comment for the ports);
    InfraError when their hosts differ or their ports collide."""
    servers = [part.strip() for part in bootstrap.split(",") if part.strip()]
    listed = [(h, int(p)) for h, _, p in (server.rpartition(":") for server in servers)]
    host, first = listed[0]
    nodes = [
        Node(
            k + 1,
            listen_host(listed[k][0] if k < len(listed) else host),
            listed[k][1] if k < len(listed) else first + 2 * k,
            controller_port + 2 * k,
        )
        for k in range(brokers)
    ]
    if len({n.host for n in nodes}) != 1:
        raise InfraError(f"kafka: the local cluster's nodes must share one host, got {bootstrap!r}")
    ports = [n.port for n in nodes] + [n.controller_port for n in nodes]
    if len(set(ports)) != len(ports):
        raise InfraError(
            f"kafka: the {brokers} nodes' ports collide (clients "
            f"{', '.join(str(n.port) for n in nodes)}, controllers "
            f"{', '.join(str(n.controller_port) for n in nodes)}); set kafka_controller_port "
            "or kafka_bootstrap so that they differ"
        )
    return nodes


def quorum_voters(nodes: list[Node]) -> str:
    """``controller.quorum.voters`` of ``nodes``: ``1@host:port,2@host:port,...``."""
    return ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in nodes)


def cluster_bootstrap(nodes: list[Node]) -> str:
    """A bootstrap naming every node, so that a client starts with any one of them down."""
    return ",".join(n.address for n in nodes)


def cluster_heap(heap: str) -> str:
    """A node's -Xmx in a cluster: ``heap``, at most ``CLUSTER_HEAP``."""
    return heap if parse_heap(heap) <= parse_heap(CLUSTER_HEAP) else CLUSTER_HEAP


@dataclass(frozen=True, slots=True)
class Cluster:
    """A local cluster's files and nodes."""

    dir: Path
    version_dir: Path
    nodes: list[Node]
    cluster_id: str | None  # None until its storage is first formatted

    @property
    def manifest(self) -> Path:
        return self.dir / "cluster.json"

    @property
    def bootstrap(self) -> str:
        return cluster_bootstrap(self.nodes)

    def paths(self, node: Node) -> KafkaPaths:
        """The run directory of ``node``."""
        return KafkaPaths(self.version_dir, self.dir / f"node-{node.node_id}")

    def node(self, node_id: int) -> Node:
        for n in self.nodes:
            if n.node_id == node_id:
                return n
        raise InfraError(f"kafka: the cluster in {self.dir} has no node {node_id}")

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        doc = {
            "cluster_id": self.cluster_id,
            "nodes": [
                {
                    "node_id": n.node_id,
                    "host": n.host,
                    "port": n.port,
                    "controller_port": n.controller_port,
                }
                for n in self.nodes
            ],
        }
        tmp = self.manifest.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        tmp.replace(self.manifest)


def cluster_of(settings: Settings) -> Cluster | None:
    """The local cluster the settings name: the one recorded under the first bootstrap port,
    else a new one when ``kafka_brokers`` > 1; None for the single node."""
    version_dir = KafkaPaths.of(settings).version_dir
    base = settings.home / "kafka" / f"cluster-{settings.kafka_port}"
    manifest = base / "cluster.json"
    if manifest.is_file():
        try:
            doc = json.loads(manifest.read_text(encoding="utf-8"))
            nodes = [
                Node(int(d["node_id"]), str(d["host"]), int(d["port"]), int(d["controller_port"]))
                for d in doc["nodes"]
            ]
            cid = doc.get("cluster_id")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InfraError(f"kafka: unreadable {manifest} ({exc}); delete {base}") from None
        if settings.kafka_brokers > 1 and settings.kafka_brokers != len(nodes):
            raise InfraError(
                f"kafka: {base} holds a cluster of {len(nodes)} nodes, not "
                f"{settings.kafka_brokers}; use --brokers {len(nodes)}, or `streamrec infra "
                f"down` and delete {base} (its topics are lost)"
            )
        return Cluster(base, version_dir, nodes, str(cid) if cid else None)
    if settings.kafka_brokers > 1:
        nodes = cluster_nodes(
            settings.kafka_bootstrap, settings.kafka_controller_port, settings.kafka_brokers
        )
        return Cluster(base, version_dir, nodes, None)
    return None


def _cluster_brokers(settings: Settings, cluster: Cluster, timeout_s: float) -> set[int]:
    """Ids of the nodes the cluster's metadata lists at their own address (and, once known,
    under the cluster's id): an answering broker that is not this cluster's counts for none."""
    if not any(port_open(n.host, n.port, 0.2) for n in cluster.nodes):
        return set()
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    # The shared KafkaLog (``kafka_common``): a node still starting refuses connections, a
    # line librdkafka logs per attempt, which it turns to DEBUG.
    admin = AdminClient({**settings.kafka_common(), "bootstrap.servers": cluster.bootstrap})

    try:
        md = admin.list_topics(timeout=timeout_s)
    except KafkaException:
        return set()
    finally:
        admin.poll(0)
    if cluster.cluster_id is not None and md.cluster_id != cluster.cluster_id:
        return set()
    listed = {b.id: (b.host, b.port) for b in md.brokers.values()}
    return {n.node_id for n in cluster.nodes if listed.get(n.node_id) == (n.host, n.port)}


def _node_states(settings: Settings, cluster: Cluster) -> list[tuple[Node, int | None, bool, bool]]:
    """(node, our pid or None, answering, port busy) for every node."""
    answering = _cluster_brokers(settings, cluster, PROBE_TIMEOUT_S)
    out = []
    for n in cluster.nodes:
        paths = cluster.paths(n)
        busy = port_open(n.host, n.port, 0.2)
        out.append((n, _ours(paths), busy and n.node_id in answering, busy))
    return out


def _cluster_status(
    cluster: Cluster, states: list[tuple[Node, int | None, bool, bool]]
) -> tuple[ServiceStatus, tuple[ServiceStatus, ...]]:
    nodes: list[ServiceStatus] = []
    for n, pid, healthy, busy in states:
        paths, name = cluster.paths(n), f"kafka{n.node_id}"
        if pid is not None:
            detail = "" if healthy else "process alive but not in the cluster's metadata"
            nodes.append(
                ServiceStatus(name, healthy, n.address, "ours", pid, paths.server_log, detail)
            )
        elif healthy:
            nodes.append(ServiceStatus(name, True, n.address, "external"))
        else:
            nodes.append(
                ServiceStatus(
                    name,
                    False,
                    n.address,
                    "down",
                    detail="something else listens there" if busy else "",
                )
            )
    up_count = sum(s.running for s in nodes)
    how: How = "ours" if any(s.how == "ours" for s in nodes) else "external" if up_count else "down"
    whole = ServiceStatus(
        NAME,
        up_count == len(nodes),
        cluster.bootstrap,
        how,
        detail=f"{up_count} of {len(nodes)} KRaft nodes answering, data in {cluster.dir}",
    )
    return whole, tuple(nodes)


def up_cluster(
    settings: Settings, cluster: Cluster, echo: Echo, *, timeout_s: float = CLUSTER_READY_S
) -> tuple[ServiceStatus, tuple[ServiceStatus, ...]]:
    """Start every node of ``cluster`` that is not running (formatting new storage with the
    cluster's id), then poll, bounded by ``timeout_s`` (at least ``CLUSTER_READY_S``), until
    the metadata lists every node. Nodes that answer already are left as they are."""
    states = _node_states(settings, cluster)
    if all(healthy for _, _, healthy, _ in states):
        echo(f"kafka: cluster of {len(states)} nodes already running at {cluster.bootstrap}")
        return _cluster_status(cluster, states)
    for n, pid, healthy, busy in states:
        if not is_loopback(n.host):
            raise InfraError(
                f"kafka: node {n.node_id} at {n.address} is not on loopback; "
                "streamrec starts local clusters only"
            )
        if healthy and pid is None:
            raise InfraError(
                f"kafka: a broker streamrec did not start answers at {n.address} while other "
                "nodes of the cluster are down; stop it or choose other ports "
                "(kafka_bootstrap, kafka_controller_port)"
            )
        if pid is None and busy:
            raise InfraError(
                f"kafka: something listens at {n.address} but is not node "
                f"{n.node_id} of this cluster; stop it or choose other ports"
            )
        if pid is None and port_open(n.host, n.controller_port):
            raise InfraError(
                f"kafka: controller port {n.controller_port} of node {n.node_id} is already in "
                "use; set kafka_controller_port to a free range"
            )
    if settings.kafka_sasl_username:
        raise InfraError(
            "kafka: the local cluster speaks PLAINTEXT only; unset kafka_sasl_username or "
            "point kafka_bootstrap at your SASL cluster"
        )
    java = find_java()
    ensure_jars(settings, KafkaPaths.of(settings), echo)
    if cluster.cluster_id is None:
        first = cluster.paths(cluster.nodes[0])
        write_node_dir(first, cluster, cluster.nodes[0])
        words = _run_tool(java, first, "random-uuid").split()
        if not words:
            raise InfraError("kafka: StorageTool random-uuid printed nothing")
        cluster = Cluster(cluster.dir, cluster.version_dir, cluster.nodes, words[-1])
    cluster.save()  # before any format: status and down find the nodes from here on
    heap = cluster_heap(settings.kafka_heap)
    started: dict[int, int] = {}
    for n, pid, healthy, _busy in states:
        if pid is not None or healthy:
            continue
        paths = cluster.paths(n)
        write_node_dir(paths, cluster, n)
        if not (paths.data / "meta.properties").is_file():
            echo(
                f"kafka: formatting node {n.node_id} in {paths.data} (cluster {cluster.cluster_id})"
            )
            assert cluster.cluster_id is not None
            _run_tool(
                java, paths, "format", "-t", cluster.cluster_id, "-c", str(paths.server_properties)
            )
        cmd = java_command(java, paths, heap)
        echo(f"kafka: starting node {n.node_id} on {n.address}, log {paths.server_log}")
        log.info("starting %s", " ".join(cmd))
        started[n.node_id] = spawn_detached(cmd, paths.stdout_log, paths.run_dir)
        write_pid(paths.pid_file, started[n.node_id])
    waited = _wait_cluster(settings, cluster, started, max(timeout_s, CLUSTER_READY_S))
    echo(f"kafka: {len(cluster.nodes)} nodes ready at {cluster.bootstrap} after {waited:.1f} s")
    if settings.kafka_bootstrap != cluster.bootstrap:
        echo(
            f"kafka: set STREAMREC_KAFKA_BOOTSTRAP={cluster.bootstrap} (and "
            f"STREAMREC_KAFKA_BROKERS={len(cluster.nodes)}) so clients start with any node down"
        )
    return _cluster_status(cluster, _node_states(settings, cluster))


def write_node_dir(paths: KafkaPaths, cluster: Cluster, node: Node) -> None:
    """Write a cluster node's server.properties and log4j2.properties."""
    paths.logs.mkdir(parents=True, exist_ok=True)
    paths.server_properties.write_text(
        render_server_properties(
            node.host,
            node.port,
            node.controller_port,
            paths.data,
            node_id=node.node_id,
            voters=quorum_voters(cluster.nodes),
            replicas=min(3, len(cluster.nodes)),
        ),
        encoding="utf-8",
    )
    log4j = resources.files("streamrec.infra").joinpath("log4j2.properties").read_text("utf-8")
    paths.log4j.write_text(log4j, encoding="utf-8")


def _wait_cluster(
    settings: Settings, cluster: Cluster, started: dict[int, int], timeout_s: float
) -> float:
    """Poll until the metadata lists every node; seconds waited. InfraError when a node just
    started exits, or after ``timeout_s``."""
    began = time.monotonic()
    deadline = began + timeout_s
    want = {n.node_id for n in cluster.nodes}
    have: set[int] = set()
    while True:
        for node_id, pid in started.items():
            if not pid_alive(pid):
                paths = cluster.paths(cluster.node(node_id))
                paths.pid_file.unlink(missing_ok=True)
                raise InfraError(
                    f"kafka: node {node_id} exited during startup; see {paths.server_log}\n"
                    + _log_tails(paths)
                )
        have = _cluster_brokers(settings, cluster, 2.0)
        have = {i for i in have if port_open(cluster.node(i).host, cluster.node(i).port, 0.2)}
        if have == want:
            return time.monotonic() - began
        if time.monotonic() >= deadline:
            missing = ", ".join(str(i) for i in sorted(want - have))
            raise InfraError(
                f"kafka: node(s) {missing} not in the cluster's metadata after "
                f"{timeout_s:.0f} s; they keep running, `streamrec infra down` stops them; "
                f"logs under {cluster.dir}"
            )
        time.sleep(POLL_S * 5)


def down_cluster(settings: Settings, cluster: Cluster, echo: Echo) -> None:
    """SIGTERM every node of ours at once (one by one, the last would wait for a quorum that
    is gone), poll until all are gone (``STOP_TIMEOUT_S``), then SIGKILL what is left. Data
    and cluster.json stay: ``up`` starts the same cluster again."""
    pids = {n.node_id: _ours(cluster.paths(n)) for n in cluster.nodes}
    ours = {i: p for i, p in pids.items() if p is not None}
    if not ours:
        echo(f"kafka: no node of ours for the cluster at {cluster.bootstrap}")
        return
    for node_id, pid in ours.items():
        echo(f"kafka: stopping node {node_id} (pid {pid})")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and any(pid_alive(p) for p in ours.values()):
        time.sleep(POLL_S)
    for node_id, pid in ours.items():
        if pid_alive(pid):
            kill_pid(pid, f"kafka node {node_id}", echo)
        cluster.paths(cluster.node(node_id)).pid_file.unlink(missing_ok=True)
    echo(f"kafka: stopped {len(ours)} node(s)")


def kill_node(settings: Settings, node_id: int, echo: Echo) -> None:
    """SIGKILL one node of the local cluster, as a crash would; returns once its port is
    closed. For the cluster tests; ``up_service`` starts it again."""
    cluster = cluster_of(settings)
    if cluster is None:
        raise InfraError(f"kafka: no local cluster at {settings.kafka_bootstrap}")
    node = cluster.node(node_id)
    paths = cluster.paths(node)
    pid = _ours(paths)
    if pid is None:
        raise InfraError(f"kafka: node {node_id} at {node.address} is not running as ours")
    kill_pid(pid, f"kafka node {node_id}", echo)
    paths.pid_file.unlink(missing_ok=True)
    wait_port_closed(node.host, node.port, f"kafka node {node_id}")


# --- One node or a cluster: what ``streamrec.infra`` calls ---------------------------------


def up_service(
    settings: Settings, echo: Echo, *, timeout_s: float = 60.0
) -> tuple[ServiceStatus, tuple[ServiceStatus, ...]]:
    """``up`` for the single node, ``up_cluster`` for a cluster; (the service, its nodes)."""
    cluster = cluster_of(settings)
    if cluster is None:
        return up(settings, echo, timeout_s=timeout_s), ()
    return up_cluster(settings, cluster, echo, timeout_s=timeout_s)


def status_service(settings: Settings) -> tuple[ServiceStatus, tuple[ServiceStatus, ...]]:
    """``status`` for the single node, every node's for a cluster."""
    cluster = cluster_of(settings)
    if cluster is None:
        return status(settings), ()
    return _cluster_status(cluster, _node_states(settings, cluster))


def down_service(settings: Settings, echo: Echo) -> None:
    """``down`` for the single node, ``down_cluster`` for a cluster."""
    cluster = cluster_of(settings)
    if cluster is None:
        down(settings, echo)
    else:
        down_cluster(settings, cluster, echo)
