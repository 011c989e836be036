"""Web config (TLS + basic auth): parsing, and a real TLS server and clients on 127.0.0.1.

Certificates are made at test time with `cryptography`; the server is the exporter's own
MetricsServer with an empty snapshot.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import ipaddress
import logging
import shutil
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client import CollectorRegistry

from deepracer_exporter.exposition import Exposition
from deepracer_exporter.server import MetricsServer
from deepracer_exporter.snapshot import Snapshot
from deepracer_exporter.webconfig import (
    BasicAuth,
    WebConfig,
    WebConfigInvalid,
    load_web_config,
    parse_web_config,
    ssl_context,
)

FIXTURES = Path(__file__).parent / "webconfig"
SECRET = "correct-horse-battery-staple-7f3a"  # the plaintext password in plaintext_password.yml


# --- certificates -------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, Any] | None,
          *, ca: bool = False, server: bool = False, client: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = (subject, key) if issuer is None else issuer
    b = (x509.CertificateBuilder()
         .subject_name(_name(subject)).issuer_name(_name(issuer_name))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                        critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
             issuer_key.public_key()), critical=False))
    if ca:
        b = b.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                            critical=False)
    if client:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None,
           password: bytes | None = None) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        enc: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password) if password
            else serialization.NoEncryption())
        path.with_suffix(".key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc))


@dataclass(frozen=True)
class PKI:
    dir: Path  # ca.crt, server.crt/.key, client.crt/.key, rogue-client.crt/.key, ...


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test CA", ca_key, None, ca=True)
    _write(d / "ca", ca)
    server_key = ec.generate_private_key(ec.SECP256R1())
    _write(d / "server", _cert("localhost", server_key, ("test CA", ca_key), server=True),
           server_key)
    _write(d / "encrypted", _cert("localhost", server_key, ("test CA", ca_key), server=True),
           server_key, password=b"passphrase")
    other_key = ec.generate_private_key(ec.SECP256R1())
    _write(d / "mismatched", _cert("localhost", server_key, ("test CA", ca_key), server=True),
           other_key)
    client_key = ec.generate_private_key(ec.SECP256R1())
    _write(d / "client", _cert("prometheus", client_key, ("test CA", ca_key), client=True),
           client_key)
    rogue_ca_key = ec.generate_private_key(ec.SECP256R1())
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    _write(d / "rogue-client",
           _cert("intruder", rogue_key, ("rogue CA", rogue_ca_key), client=True), rogue_key)
    return PKI(d)


def _hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def _web_config(pki: PKI, tmp_path: Path, body: str) -> WebConfig:
    """Write web.yml next to copies of the PEM files, referenced by relative path."""
    for f in pki.dir.iterdir():
        shutil.copy(f, tmp_path / f.name)
    path = tmp_path / "web.yml"
    path.write_text(body)
    return load_web_config(path)


# --- the real server ---------------------------------------------------------------------


def _exposition() -> Exposition:
    exposition = Exposition(CollectorRegistry())
    exposition.update(Snapshot((), (), 15.0, 5, 0.0))
    return exposition


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[MetricsServer] = []

    def start(cfg: WebConfig) -> int:
        server = MetricsServer("127.0.0.1", 0, _exposition(), cfg)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return int(server.server_address[1])

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def _client_ctx(pki: PKI, cert: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.dir / "ca.crt"))
    if cert:
        ctx.load_cert_chain(pki.dir / f"{cert}.crt", pki.dir / f"{cert}.key")
    return ctx


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _get(port: int, ctx: ssl.SSLContext, authorization: str | None = None,
         host: str = "localhost") -> http.client.HTTPResponse:
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)
    headers = {"Authorization": authorization} if authorization else {}
    conn.request("GET", "/metrics", headers=headers)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


TLS_AUTH = """
tls_server_config:
  cert_file: server.crt
  key_file: server.key
basic_auth_users:
  alice: {alice}
  bob: {bob}
http_server_config:
  http2: false
  headers:
    X-Content-Type-Options: nosniff
"""


@pytest.fixture
def tls_auth_port(pki: PKI, tmp_path: Path, serve: Any) -> int:
    cfg = _web_config(pki, tmp_path, TLS_AUTH.format(alice=_hash("wonderland"),
                                                     bob=_hash("builder")))
    return int(serve(cfg))


# --- end to end ----------------------------------------------------------------------------


def test_good_credentials_get_200_over_verified_tls(pki: PKI, tls_auth_port: int) -> None:
    resp = _get(tls_auth_port, _client_ctx(pki), _basic("alice", "wonderland"))
    assert resp.status == 200
    assert resp.getheader("X-Content-Type-Options") == "nosniff"
    # Certificate also valid for the IP, and the second user works as well.
    assert _get(tls_auth_port, _client_ctx(pki), _basic("bob", "builder"),
                host="127.0.0.1").status == 200


@pytest.mark.parametrize("authorization", [
    _basic("alice", "wrong"),
    _basic("alice", "builder"),       # another user's password
    _basic("mallory", "wonderland"),  # unknown user
    None,
    "Bearer wonderland",
    "Basic not-base64!",
])
def test_bad_or_missing_credentials_get_401_with_challenge(
        pki: PKI, tls_auth_port: int, authorization: str | None) -> None:
    resp = _get(tls_auth_port, _client_ctx(pki), authorization)
    assert resp.status == 401
    assert resp.getheader("WWW-Authenticate", "").startswith('Basic realm="')


def test_plain_http_to_tls_port_fails_and_server_keeps_serving(
        pki: PKI, tls_auth_port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", tls_auth_port, timeout=10)
    with pytest.raises((http.client.HTTPException, OSError)):
        conn.request("GET", "/metrics")
        conn.getresponse()
    conn.close()
    assert _get(tls_auth_port, _client_ctx(pki), _basic("alice", "wonderland")).status == 200


def test_client_without_the_ca_rejects_the_server(tls_auth_port: int) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _get(tls_auth_port, ssl.create_default_context(), _basic("alice", "wonderland"))


def test_idle_connection_does_not_stall_other_scrapes(pki: PKI, tls_auth_port: int) -> None:
    """A handshake waits for its client without holding up the others."""
    with socket.create_connection(("127.0.0.1", tls_auth_port)):  # connects, never handshakes
        resp = _get(tls_auth_port, _client_ctx(pki), _basic("alice", "wonderland"))
    assert resp.status == 200


@pytest.mark.parametrize("reset", [False, True], ids=["eof", "reset"])
def test_tls_client_dropping_mid_headers_prints_no_traceback(
        pki: PKI, tls_auth_port: int, capfd: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture, reset: bool) -> None:
    """Handshake, half a request head, then a close without close_notify (SSLEOFError on the
    server) or a reset: an unauthenticated client must not be able to flood the log."""
    for _ in range(3):
        raw = socket.create_connection(("127.0.0.1", tls_auth_port), timeout=10)
        tls = _client_ctx(pki).wrap_socket(raw, server_hostname="localhost")
        tls.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAuthoriz")
        if reset:
            tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        tls.close()  # without unwrap(): no close_notify is sent
    assert _get(tls_auth_port, _client_ctx(pki), _basic("alice", "wonderland")).status == 200
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err, err
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


CLIENT_CERT = """
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.crt
  min_version: TLS13
"""


def test_client_certificate_mode(pki: PKI, tmp_path: Path, serve: Any) -> None:
    port = serve(_web_config(pki, tmp_path, CLIENT_CERT))
    assert _get(port, _client_ctx(pki, "client")).status == 200  # no basic auth configured
    for ctx in (_client_ctx(pki), _client_ctx(pki, "rogue-client")):
        with pytest.raises((ssl.SSLError, OSError, http.client.HTTPException)):
            _get(port, ctx)
    tls12 = _client_ctx(pki, "client")
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):  # below min_version
        _get(port, tls12)
    assert _get(port, _client_ctx(pki, "client")).status == 200


def test_basic_auth_without_tls_is_flagged(tmp_path: Path, serve: Any) -> None:
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  alice: {_hash('wonderland')}\n")
    cfg = load_web_config(path)
    assert cfg.credentials_in_clear and ssl_context(cfg) is None
    port = serve(cfg)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics", headers={"Authorization": _basic("alice", "wonderland")})
    assert conn.getresponse().status == 200
    conn.close()


# --- BasicAuth unit behaviour ------------------------------------------------------------


class CountingVerify:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        self.calls += 1
        return bcrypt.checkpw(password, hashed)


def test_successful_check_is_cached_and_failures_are_not() -> None:
    verify = CountingVerify()
    auth = BasicAuth({"alice": _hash("wonderland")}, verify=verify)
    assert auth.check(_basic("alice", "wonderland"))
    assert verify.calls == 1
    for _ in range(3):
        assert auth.check(_basic("alice", "wonderland"))
    assert verify.calls == 1  # scrapes after the first skip bcrypt
    assert not auth.check(_basic("alice", "wonderland2"))  # never answered from the cache
    assert not auth.check(_basic("alice", "wonderland2"))
    assert verify.calls == 3
    assert auth.check(_basic("alice", "wonderland"))
    assert verify.calls == 3


def test_unknown_user_still_pays_bcrypt_and_malformed_headers_do_not() -> None:
    verify = CountingVerify()
    auth = BasicAuth({"alice": _hash("wonderland")}, verify=verify)
    assert not auth.check(_basic("mallory", "wonderland"))
    assert verify.calls == 1  # same work as a known user: no user enumeration by timing
    for header in (None, "", "Basic", "Basic !!!", "Digest abc",
                   "Basic " + base64.b64encode(b"no-colon").decode(),
                   "Basic " + base64.b64encode(b"\xff\xfe:pw").decode()):
        assert not auth.check(header)
    assert verify.calls == 1


class CostRecorder:
    """bcrypt.checkpw that records the cost of every hash it is asked to check."""

    def __init__(self) -> None:
        self.costs: list[int] = []

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        self.costs.append(int(hashed[4:6]))
        return bcrypt.checkpw(password, hashed)

    def take(self) -> list[int]:
        costs, self.costs = sorted(self.costs), []
        return costs


def test_every_failed_check_costs_the_same_whatever_the_users_cost() -> None:
    """docs/security.md promises that timing does not reveal which users exist: with a cheap
    and a dear user, a wrong password for either and an unknown user run the same bcrypt work."""
    verify = CostRecorder()
    dear = bcrypt.hashpw(b"builder", bcrypt.gensalt(rounds=6)).decode()
    auth = BasicAuth({"alice": _hash("wonderland"), "bob": dear}, verify=verify)
    assert not auth.check(_basic("alice", "wrong"))
    cheap_user = verify.take()
    assert not auth.check(_basic("bob", "wrong"))
    dear_user = verify.take()
    assert not auth.check(_basic("mallory", "wrong"))
    unknown_user = verify.take()
    assert cheap_user == dear_user == unknown_user == [4, 6]
    assert auth.check(_basic("bob", "builder"))
    assert verify.take() == [4, 6]  # a first success too; later ones come from the cache


def test_cached_credentials_do_not_leak_between_users() -> None:
    auth = BasicAuth({"alice": _hash("same"), "bob": _hash("other")})
    assert auth.check(_basic("alice", "same"))
    assert not auth.check(_basic("bob", "same"))
    assert auth.check(_basic("bob", "other"))
    assert auth.check(_basic("alice", "same"))


def test_password_longer_than_bcrypt_limit_is_rejected_not_raised() -> None:
    auth = BasicAuth({"alice": _hash("wonderland")})
    assert not auth.check(_basic("alice", "x" * 100))
    assert auth.check("basic " + base64.b64encode(b"alice:wonderland").decode())  # any case


def test_secret_never_logged_or_echoed(caplog: pytest.LogCaptureFixture, pki: PKI,
                                       tmp_path: Path, serve: Any) -> None:
    caplog.set_level(logging.DEBUG)
    auth = BasicAuth({"alice": _hash("wonderland")})
    assert not auth.check(_basic("alice", SECRET))
    assert not auth.check(_basic(SECRET, SECRET))  # password typed into the user field
    cfg = _web_config(pki, tmp_path, TLS_AUTH.format(alice=_hash(SECRET), bob=_hash("b")))
    assert SECRET not in repr(cfg) and cfg.basic_auth_users["alice"] not in repr(cfg)
    port = serve(cfg)
    conn = http.client.HTTPSConnection("localhost", port, context=_client_ctx(pki), timeout=10)
    conn.request("GET", "/metrics", headers={"Authorization": _basic("alice", SECRET + "x")})
    resp = conn.getresponse()
    assert resp.status == 401 and SECRET.encode() not in resp.read()
    conn.close()
    for text in (f"basic_auth_users:\n  alice: {SECRET}\n",
                 f"basic_auth_users:\n  alice: [{SECRET}\n",  # YAML syntax error on that line
                 f"basic_auth_users:\n  alice:{SECRET}\n",  # no space: a string, no mapping
                 f"basic_auth_users:\n  'alice:{SECRET}': {_hash('x')}\n"):
        with pytest.raises(WebConfigInvalid) as exc:
            parse_web_config(text, tmp_path / "web.yml")
        assert SECRET not in str(exc.value)
    assert "debug" in {r.levelname.lower() for r in caplog.records}  # rejections were logged
    assert SECRET not in caplog.text


# --- invalid files -----------------------------------------------------------------------


@pytest.mark.parametrize(("fixture", "key", "fix"), [
    ("plaintext_password.yml", "basic_auth_users.alice", "bcrypt.hashpw"),
    ("missing_key_file.yml", "tls_server_config.key_file", "required"),
    ("unknown_key.yml", "basic_auth_user", "basic_auth_users"),
    ("bad_client_auth_type.yml", "tls_server_config.client_auth_type",
     "RequireAndVerifyClientCert"),
    ("client_ca_without_client_auth.yml", "tls_server_config.client_auth_type",
     "client_auth_type: RequireAndVerifyClientCert"),
    ("old_min_version.yml", "tls_server_config.min_version", "TLS12"),
    ("unsupported_toolkit_key.yml", "rate_limit", "reverse proxy"),
])
def test_invalid_web_config_names_file_key_and_fix(pki: PKI, tmp_path: Path, fixture: str,
                                                   key: str, fix: str) -> None:
    for f in pki.dir.iterdir():  # the PEM files the fixtures refer to exist: one error each
        shutil.copy(f, tmp_path / f.name)
    path = tmp_path / fixture
    shutil.copy(FIXTURES / fixture, path)
    with pytest.raises(WebConfigInvalid) as exc:
        load_web_config(path)
    message = str(exc.value)
    problems = [line for line in message.splitlines() if line.startswith("  - ")]
    assert len(problems) == 1, message
    assert message.startswith(str(path))
    assert problems[0].startswith(f"  - {key}:"), message
    assert fix in problems[0]
    assert SECRET not in message


def test_plaintext_password_message_gives_both_hash_recipes() -> None:
    with pytest.raises(WebConfigInvalid) as exc:
        load_web_config(FIXTURES / "plaintext_password.yml")
    assert "htpasswd -nBC 10" in str(exc.value)
    assert "bcrypt.gensalt()" in str(exc.value)


def test_every_problem_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("tls_server_config:\n  cert_file: nope.crt\n  min_version: TLS10\n"
                    "basic_auth_users:\n  alice: plain\n  'bad:name': x\n")
    with pytest.raises(WebConfigInvalid) as exc:
        load_web_config(path)
    message = str(exc.value)
    for key in ("tls_server_config.cert_file", "tls_server_config.key_file",
                "tls_server_config.min_version", "basic_auth_users.alice", "basic_auth_users:"):
        assert f"  - {key}" in message, message
    assert str(tmp_path / "nope.crt") in message  # the resolved path, not the cwd-relative one


def test_relative_paths_resolve_against_the_web_config_directory(
        pki: PKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cfg = _web_config(pki, conf, CLIENT_CERT)
    monkeypatch.chdir(elsewhere)
    cfg = load_web_config(Path("..") / "conf" / "web.yml")
    assert cfg.tls is not None
    assert cfg.tls.cert_file == conf / "server.crt"
    assert cfg.tls.client_ca_file == conf / "ca.crt"
    assert cfg.tls.client_auth_type == "RequireAndVerifyClientCert"
    assert ssl_context(cfg) is not None


@pytest.mark.parametrize(("key_name", "expected"), [
    ("encrypted", "passphrase"),
    ("mismatched", "matching PEM private key"),
])
def test_unusable_key_fails_at_start_not_at_first_scrape(
        pki: PKI, tmp_path: Path, key_name: str, expected: str) -> None:
    cfg = _web_config(pki, tmp_path, f"tls_server_config:\n  cert_file: {key_name}.crt\n"
                                     f"  key_file: {key_name}.key\n")
    with pytest.raises(WebConfigInvalid) as exc:
        ssl_context(cfg)  # an encrypted key must not prompt for a passphrase on the terminal
    assert "tls_server_config." in str(exc.value) and expected in str(exc.value)


def test_empty_file_means_plain_http_without_auth(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("# nothing\n")
    cfg = load_web_config(path)
    assert cfg.tls is None and not cfg.basic_auth_users and ssl_context(cfg) is None
    assert BasicAuth.from_config(cfg) is None
    with pytest.raises(WebConfigInvalid, match="cannot read"):
        load_web_config(tmp_path / "missing.yml")


def test_example_in_docs_is_a_valid_web_config(pki: PKI, tmp_path: Path) -> None:
    doc = (Path(__file__).parent.parent / "docs" / "security.md").read_text()
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    cfg = _web_config(pki, tmp_path, example)
    assert cfg.tls is not None and list(cfg.basic_auth_users) == ["prometheus"]
    assert dict(cfg.headers) == {"X-Content-Type-Options": "nosniff"}
    assert ssl_context(cfg) is not None
