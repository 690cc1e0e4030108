"""Over TLS, as real API servers speak: the connector trusts the kubeconfig's CA, and a server
whose certificate that CA did not sign is refused (not retried as a transient fault).

The refusal also covers a kubernetes-client quirk: on a TLS failure it raises an ApiException
without a body and then trips over it (`e.body.decode`), so what escapes is an AttributeError
(connectors/kubernetes/client.py `_masked`)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker.checks import hint_for
from broker.domain.clock import ManualClock
from connectors.base import CheckItem
from connectors.errors import AuthFailed, ConnectorError
from connectors.kubernetes.client import in_cluster_loader
from connectors.kubernetes.connector import KubernetesConnector
from connectors.kubernetes.settings import KubernetesSettings
from connectors.threads import Blocking
from tests.connectors.kubernetes import objects as o
from tests.connectors.kubernetes.conftest import MakeConnector
from tests.connectors.kubernetes.fake_api import FakeKubernetes, write_kubeconfig
from tests.connectors.kubernetes.helpers import new_token, no_sleep, site


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(obj: x509.Certificate) -> bytes:
    return obj.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_pki(folder: Path, *, label: str) -> tuple[Path, ssl.SSLContext]:
    """A self-signed CA and a server certificate for 127.0.0.1 it signed: (CA file, context)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{label} CA"))
        .issuer_name(_name(f"{label} CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("kube-apiserver"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = (folder / n for n in ("ca.crt", "tls.crt", "tls.key"))
    ca_file.write_bytes(_pem(ca))
    cert_file.write_bytes(_pem(cert))
    key_file.write_bytes(_key_pem(key))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return ca_file, context


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[FakeKubernetes, Path]]:
    ca_file, context = make_pki(tmp_path / "pki", label="cluster")
    server = FakeKubernetes(token=new_token())
    server.ssl_context = context
    server.add_node(o.gpu_node("gpu-a"))
    await server.start()
    yield server, ca_file
    await server.stop()


async def test_the_connector_trusts_the_kubeconfig_ca(
    tls_server: tuple[FakeKubernetes, Path], make_connector: MakeConnector, tmp_path: Path
) -> None:
    server, ca_file = tls_server
    assert server.url.startswith("https://")
    kubeconfig = tmp_path / "tls.kubeconfig"
    write_kubeconfig(
        kubeconfig,
        {"tls": (server.url, server.token)},
        current="tls",
        certificate_authority=str(ca_file),
    )
    connector = make_connector(server=server, kubeconfig=kubeconfig)
    inv = await connector.inventory()
    assert [(p.gpu_model, p.nodes) for p in inv.pools] == [("H100", 1)]
    assert all(r.path for r in server.requests)  # answered over TLS


async def test_a_certificate_from_another_ca_is_refused(
    tls_server: tuple[FakeKubernetes, Path], make_connector: MakeConnector, tmp_path: Path
) -> None:
    server, _ = tls_server
    other_ca, _ = make_pki(tmp_path / "other", label="impostor")
    kubeconfig = tmp_path / "wrong-ca.kubeconfig"
    write_kubeconfig(
        kubeconfig,
        {"tls": (server.url, server.token)},
        current="tls",
        certificate_authority=str(other_ca),
    )
    connector = make_connector(server=server, kubeconfig=kubeconfig)
    with pytest.raises(ConnectorError) as info:
        await connector.inventory()
    assert "certificate" in str(info.value).lower()
    assert isinstance(info.value, AuthFailed)  # a wrong CA is not retried: it cannot heal
    item = CheckItem(name="api", ok=False, detail=str(info.value))
    assert "certificate-authority" in hint_for(item)
    assert server.token not in str(info.value)
    assert server.requests == []  # nothing reached the handler: the handshake failed


async def test_in_cluster_config_reaches_the_api_over_tls(
    tls_server: tuple[FakeKubernetes, Path], tmp_path: Path, blocking: Blocking, clock: ManualClock
) -> None:
    """A broker running in a pod: the service host and port from the environment, the
    service account's token and the cluster CA from their files."""
    server, ca_file = tls_server
    token_file = tmp_path / "serviceaccount" / "token"
    token_file.parent.mkdir()
    token_file.write_text(server.token, encoding="utf-8")
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(server.port)}
    connector = KubernetesConnector(
        site=site("in-cluster"),
        settings=KubernetesSettings(kubeconfig=None, context=None, in_cluster=True),
        loader=in_cluster_loader(token_file=token_file, ca_file=ca_file, environ=environ),
        clock=clock,
        blocking=blocking,
        sleep=no_sleep,
    )
    try:
        inv = await connector.inventory()
        assert [(p.gpu_model, p.nodes) for p in inv.pools] == [("H100", 1)]
        assert connector.credentials() == "the in-cluster service account"
    finally:
        await connector.close()
