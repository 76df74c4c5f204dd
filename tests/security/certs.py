"""A throwaway certificate authority for the security tests, made with ``cryptography``.

Everything is PEM: the CA certificate (clients' ``kafka_ssl_ca_file``, the broker's
truststore), the broker's keystore (its PKCS#8 key followed by its certificate, Kafka's
``ssl.keystore.type=PEM``) and a client certificate with an encrypted key for mTLS.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Pki:
    """Paths of what ``make_pki`` wrote."""

    ca: Path  # the CA certificate
    broker_keystore: Path  # broker key (PKCS#8, unencrypted) + certificate (127.0.0.1, localhost)
    client_cert: Path  # a client certificate, CN=streamrec-client, signed by the CA
    client_key: Path  # its key, encrypted with ``client_key_password``
    client_key_password: str
    stranger_ca: Path  # a CA that signed nothing here: a client trusting it must fail


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)
        .not_valid_after(now + 30 * _DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    cn: str,
    server: bool,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)
        .not_valid_after(now + 30 * _DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if server:  # librdkafka checks the host name (ssl.endpoint.identification.algorithm=https)
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return key, builder.sign(ca_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key(key: ec.EllipticCurvePrivateKey, password: str | None = None) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption(),
    )


def make_pki(directory: Path, client_key_password: str = "client-key-secret") -> Pki:
    """A CA, a broker certificate for 127.0.0.1/localhost and a client certificate, in PEM."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("streamrec-test-ca")
    broker_key, broker_cert = _leaf(ca_key, ca_cert, "localhost", server=True)
    client_key, client_cert = _leaf(ca_key, ca_cert, "streamrec-client", server=False)
    _, stranger = _ca("some-other-ca")
    pki = Pki(
        ca=directory / "ca.pem",
        broker_keystore=directory / "broker-keystore.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
        client_key_password=client_key_password,
        stranger_ca=directory / "stranger-ca.pem",
    )
    pki.ca.write_bytes(_pem(ca_cert))
    pki.broker_keystore.write_bytes(_key(broker_key) + _pem(broker_cert))
    pki.client_cert.write_bytes(_pem(client_cert))
    pki.client_key.write_bytes(_key(client_key, client_key_password))
    pki.stranger_ca.write_bytes(_pem(stranger))
    for path in (pki.broker_keystore, pki.client_key):
        path.chmod(0o600)
    return pki
