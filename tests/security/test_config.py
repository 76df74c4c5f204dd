"""The one librdkafka configuration every client takes (``connect.kafka_config``), settings of
TLS, SASL and extra librdkafka keys, refusals told apart from silence, and secrets kept out of
everything printed. No broker here."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest
from confluent_kafka import KafkaError

from streamrec.connect import OWN_KAFKA_KEYS, KafkaRefusals, kafka_config, redact
from streamrec.errors import ConfigError
from streamrec.infra.kafka import (
    BrokerSecurity,
    ScramUser,
    SecureListener,
    parse_properties,
    render_server_properties,
    secure_properties,
)
from streamrec.settings import KafkaLog, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


def _conf(**values: object) -> dict[str, object]:
    return kafka_config(load_settings(**values))


def test_plaintext_by_default_and_sasl_plaintext_for_a_user_alone() -> None:
    conf = _conf()
    assert conf["security.protocol"] == "PLAINTEXT"
    assert not any(k.startswith(("sasl.", "ssl.")) for k in conf)
    conf = _conf(kafka_sasl_username="u", kafka_sasl_password="p")  # the old settings' meaning
    assert (conf["security.protocol"], conf["sasl.mechanism"]) == ("SASL_PLAINTEXT", "PLAIN")
    assert (conf["sasl.username"], conf["sasl.password"]) == ("u", "p")


def test_sasl_ssl_scram_with_ca_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    conf = _conf(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc",
        kafka_sasl_password="pw",
        kafka_ssl_ca_file=ca,
    )
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["ssl.ca.location"] == str(ca)
    assert conf["ssl.endpoint.identification.algorithm"] == "https"


def test_mtls_and_hostname_check_off(tmp_path: Path) -> None:
    for name in ("ca.pem", "c.pem", "k.pem"):
        (tmp_path / name).write_text("x")
    conf = _conf(
        kafka_security_protocol="SSL",
        kafka_ssl_ca_file=tmp_path / "ca.pem",
        kafka_ssl_cert_file=tmp_path / "c.pem",
        kafka_ssl_key_file=tmp_path / "k.pem",
        kafka_ssl_key_password="kp",
        kafka_ssl_verify_hostname=False,
    )
    assert conf["ssl.certificate.location"] == str(tmp_path / "c.pem")
    assert conf["ssl.key.location"] == str(tmp_path / "k.pem")
    assert conf["ssl.key.password"] == "kp"
    assert conf["ssl.endpoint.identification.algorithm"] == "none"
    assert not any(k.startswith("sasl.") for k in conf)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "needs kafka_sasl_username"),
        ({"kafka_security_protocol": "SSL", "kafka_sasl_username": "u"}, "SASL_SSL or"),
        ({"kafka_ssl_ca_file": "/no/such/ca.pem"}, "no TLS"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_ca_file": "/no/such/ca.pem"},
            "kafka_ssl_ca_file=/no/such/ca.pem: no such file",
        ),
    ],
)
def test_combinations_that_cannot_work_are_one_config_error(
    values: dict[str, object], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        _conf(**values)


def test_certificate_without_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("x")
    with pytest.raises(ConfigError, match="go together"):
        _conf(kafka_security_protocol="SSL", kafka_ssl_cert_file=tmp_path / "c.pem")


def test_extra_settings_from_json_env_and_toml_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMREC_KAFKA_EXTRA", '{"socket.keepalive.enable": true, "retries": 7}')
    conf = kafka_config(load_settings())
    assert conf["socket.keepalive.enable"] == "true"
    assert conf["retries"] == 7
    monkeypatch.delenv("STREAMREC_KAFKA_EXTRA")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[kafka_extra]\n"client.rack" = "eu-1a"\n"socket.nagle.disable" = false\n')
    monkeypatch.setenv("STREAMREC_CONFIG", str(cfg))
    conf = kafka_config(load_settings())
    assert (conf["client.rack"], conf["socket.nagle.disable"]) == ("eu-1a", "false")


def test_extra_may_not_set_what_has_a_setting_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_KAFKA_EXTRA", '{"sasl.password": "x"}')
    with pytest.raises(ConfigError, match=r"kafka_extra.*sasl.password \(kafka_sasl_password\)"):
        load_settings()
    assert {"bootstrap.servers", "security.protocol", "sasl.mechanism"} <= set(OWN_KAFKA_KEYS)


def test_secrets_are_never_printed() -> None:
    s = load_settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="svc",
        kafka_sasl_password="hunter2",
        kafka_ssl_key_password="hunter3",
        kafka_extra={"sasl.oauthbearer.client.secret": "hunter4"},
    )
    for text in (repr(s), str(s)):
        assert "hunter" not in text
    shown = str(redact(kafka_config(s)))
    assert "hunter" not in shown and "svc" in shown
    assert redact({"ssl.key.pem": "k", "ssl.keystore.password": "p"}) == {
        "ssl.key.pem": "***",
        "ssl.keystore.password": "***",
    }


def test_refusals_are_told_from_a_broker_that_is_down() -> None:
    watch = KafkaRefusals()
    on_error = watch.callback("b:1")
    on_error(KafkaError(KafkaError._TRANSPORT, "b:1/bootstrap: Connect to b:1 failed: refused"))
    on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert watch.since("b:1", 0.0) is None
    on_error(
        KafkaError(
            KafkaError._AUTHENTICATION,
            "sasl_ssl://b:1/bootstrap: SASL authentication error: Authentication failed "
            "(after 12ms in state AUTH_REQ)",
        )
    )
    assert watch.since("b:1", 0.0) == "SASL authentication error: Authentication failed"
    assert watch.since("other:2", 0.0) is None
    tls = watch.callback("c:3")
    tls(KafkaError(KafkaError._TRANSPORT, "ssl://c:3/bootstrap: error:0A000086:SSL routines::x"))
    assert watch.since("c:3", 0.0) == "error:0A000086:SSL routines::x"
    assert watch.since("c:3", float("inf")) is None  # only those after a given moment


def test_librdkafka_refusal_lines_go_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    log = KafkaLog("test.kafka.refusal")
    with caplog.at_level(logging.INFO, logger="test.kafka.refusal"):
        log.log(logging.ERROR, "%s", "b/bootstrap: SASL authentication error: failed")
        log.log(logging.ERROR, "%s", "b/bootstrap: some other failure")
    assert [r.getMessage() for r in caplog.records] == ["b/bootstrap: some other failure"]


def test_secure_listeners_in_server_properties(tmp_path: Path) -> None:
    props = parse_properties(render_server_properties("127.0.0.1", 1, 2, tmp_path))
    security = BrokerSecurity(
        listeners=(
            SecureListener(
                "SASL_T", 3, "SASL_SSL", keystore=tmp_path / "ks.pem", plain_users={"carol": "pw"}
            ),
            SecureListener(
                "MTLS_T",
                4,
                "SSL",
                keystore=tmp_path / "ks.pem",
                truststore=tmp_path / "ca.pem",
                client_auth="required",
            ),
        ),
        scram_users=(ScramUser("SCRAM-SHA-256", "alice", "pw"),),
    )
    out = secure_properties(props, "127.0.0.1", security)
    assert out["listeners"].endswith(",SASL_T://127.0.0.1:3,MTLS_T://127.0.0.1:4")
    assert out["advertised.listeners"] == "PLAINTEXT://127.0.0.1:1,SASL_T://127.0.0.1:3," + (
        "MTLS_T://127.0.0.1:4"
    )
    assert "SASL_T:SASL_SSL" in out["listener.security.protocol.map"]
    assert out["inter.broker.listener.name"] == "PLAINTEXT"
    assert out["listener.name.sasl_t.ssl.keystore.type"] == "PEM"
    assert "scram-sha-512" in out["listener.name.sasl_t.sasl.enabled.mechanisms"].lower()
    assert 'user_carol="pw"' in out["listener.name.sasl_t.plain.sasl.jaas.config"]
    assert out["listener.name.mtls_t.ssl.client.auth"] == "required"
    assert "listener.name.mtls_t.sasl.enabled.mechanisms" not in out
    assert security.scram_users[0].format_arg() == "SCRAM-SHA-256=[name=alice,password=pw]"


def _client_calls() -> list[tuple[str, int, str]]:
    """Every Consumer(, Producer( and AdminClient( call in the package, with its config's
    source text."""
    calls = []
    for folder in ("streamrec", "worker", "producer", "model"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.is_symlink() or any(p.is_symlink() for p in path.parents if ROOT in p.parents):
                continue
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id in ("Consumer", "Producer", "AdminClient")
                ):
                    src = ast.get_source_segment(path.read_text(), node) or ""
                    calls.append((str(path.relative_to(ROOT)), node.lineno, src))
    return calls


def test_every_kafka_client_of_the_package_takes_the_one_config() -> None:
    calls = _client_calls()
    assert len(calls) >= 8, calls  # worker, DLQ, models, probe, producer, publish, snapshot...
    for where, line, src in calls:
        # either the config itself, or a variable assigned from it just above
        if "kafka_common()" in src:
            continue
        text = (ROOT / where).read_text().splitlines()
        above = "\n".join(text[max(0, line - 25) : line])
        assert "kafka_common()" in above, f"{where}:{line} builds a Kafka client without it"


def test_settings_fields_of_security_are_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "## Security" in readme
    for name in Settings.model_fields:
        if name.startswith("kafka_s") or name == "kafka_extra":
            assert f"`STREAMREC_{name.upper()}`" in readme
