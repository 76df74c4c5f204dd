"""A broker of the security tests' own: PLAINTEXT for readiness, SASL_SSL and SSL with a
required client certificate (mTLS) beside it, on spare ports; SCRAM users created when its
storage is formatted. The session's shared broker (9092) is never reconfigured.

Started once per session, the first time a test asks for it, and stopped at the end. Redis
is the session's (each test takes fresh topics and a fresh key prefix from ``stack``).
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streamrec.infra import kafka
from streamrec.settings import Settings
from tests.conftest import forget_kafka_run
from tests.security.certs import Pki, make_pki

#: The SCRAM users created at format time: (mechanism, name, password).
SCRAM_256 = ("SCRAM-SHA-256", "alice", "alice-secret-256")
SCRAM_512 = ("SCRAM-SHA-512", "bob", "bob-secret-512")
PLAIN = ("PLAIN", "carol", "carol-secret-plain")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class SecureBroker:
    """The security tests' broker: its ports and certificates."""

    base: Settings  # PLAINTEXT listener (how the fixture checks it is up)
    sasl_ssl_port: int
    mtls_port: int
    pki: Pki

    def sasl_ssl(self, mechanism: str, user: str, password: str, **more: Any) -> dict[str, Any]:
        """Settings values of a client on the SASL_SSL listener."""
        return {
            "kafka_bootstrap": f"127.0.0.1:{self.sasl_ssl_port}",
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": mechanism,
            "kafka_sasl_username": user,
            "kafka_sasl_password": password,
            "kafka_ssl_ca_file": self.pki.ca,
            **more,
        }

    def mtls(self, **more: Any) -> dict[str, Any]:
        """Settings values of a client on the SSL listener, with its client certificate."""
        return {
            "kafka_bootstrap": f"127.0.0.1:{self.mtls_port}",
            "kafka_security_protocol": "SSL",
            "kafka_ssl_ca_file": self.pki.ca,
            "kafka_ssl_cert_file": self.pki.client_cert,
            "kafka_ssl_key_file": self.pki.client_key,
            "kafka_ssl_key_password": self.pki.client_key_password,
            **more,
        }


@pytest.fixture(scope="session")
def secure_broker(infra: Settings) -> Iterator[SecureBroker]:
    if os.environ.get("STREAMREC_TEST_SERVICES") == "off":
        pytest.fail("STREAMREC_TEST_SERVICES=off: this run must not start Kafka or Redis")
    tmp = Path(tempfile.mkdtemp(prefix="streamrec-sec-"))
    pki = make_pki(tmp / "pki")
    port, controller, sasl_port, mtls_port = (_free_port() for _ in range(4))
    base = infra.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{port}", "kafka_controller_port": controller}
    )
    security = kafka.BrokerSecurity(
        listeners=(
            kafka.SecureListener(
                "SASL_SSL_TEST",
                sasl_port,
                "SASL_SSL",
                keystore=pki.broker_keystore,
                plain_users={PLAIN[1]: PLAIN[2]},
            ),
            kafka.SecureListener(
                "MTLS_TEST",
                mtls_port,
                "SSL",
                keystore=pki.broker_keystore,
                truststore=pki.ca,
                client_auth="required",
            ),
        ),
        scram_users=(kafka.ScramUser(*SCRAM_256), kafka.ScramUser(*SCRAM_512)),
    )
    log: list[str] = []
    forget_kafka_run(base)
    kafka.up(base, log.append, timeout_s=120, security=security)
    try:
        yield SecureBroker(base, sasl_port, mtls_port, pki)
    finally:
        kafka.down(base, log.append)
        forget_kafka_run(base)


@pytest.fixture()
def secure_stack(
    secure_broker: SecureBroker, stack: Callable[..., Settings]
) -> Callable[..., Settings]:
    """Factory: ``stack`` settings (fresh topics, group, prefix on the session's Redis) for a
    client of the security broker, e.g. ``secure_stack(**secure_broker.sasl_ssl(...))``.
    Values go through validation (``Settings(**...)``), as the environment's would."""

    def make(**values: Any) -> Settings:
        return Settings(**{**stack().model_dump(exclude_none=True), **values})

    return make
