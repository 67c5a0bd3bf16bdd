"""The enrollment CA against a real router on swtpm, whose EK certificate comes from swtpm's local CA
(trusted here as the manufacturer root): ca init, ca enroll, ca serve, the issued AK certificate
checked by our validate_ak_chain and by `openssl verify`, and each bad input of issue 12 section 6
refused with its own code and no certificate issued."""

from __future__ import annotations

import base64
import json
import shutil
import stat
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from conftest import require
from cryptography import x509

from nomyo_audit.ca import (
    ENROLLMENTS_PATH,
    CertificateAuthority,
    SpentSecrets,
    create_ca_app,
    enroll_router,
    enroll_with_ca,
    init_authority,
)
from nomyo_audit.cli._main import cli, main
from nomyo_audit.errors import CertificateError, EnrollmentError
from nomyo_audit.router import ServerThread
from nomyo_audit.router._attestation import make_attester
from nomyo_audit.tpm import TrustStore, parse_public, validate_ak_chain

pytestmark = pytest.mark.swtpm
ADMIN = "admin-key-for-tests"
NOW = datetime.now(timezone.utc)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def ca_dir(tmp_path) -> Path:
    init_authority(tmp_path / "ca", "test enrollment CA")
    return tmp_path / "ca"


@pytest.fixture
def authority(ca_dir) -> CertificateAuthority:
    from nomyo_audit.ca import load_authority

    return load_authority(ca_dir)


@pytest.fixture
def roots(swtpm, tmp_path) -> Path:
    directory = tmp_path / "tpm-roots"
    directory.mkdir()
    shutil.copy(swtpm.ca_root_path, directory / "swtpm-localca-root.pem")
    return directory


@pytest.fixture
def tpm_router(swtpm, make_router):
    return make_router(attester=make_attester(swtpm.spec), admin_keys=(ADMIN,))


def quote_chain(router) -> list[str] | None:
    block = httpx.get(router.url + "/pki/attestation", params={"nonce": "00" * 32}).json()["tpm_attestation"]
    return block.get("aik_cert_chain_b64")


def router_aik(router):
    return parse_public(base64.b64decode(httpx.get(router.url + "/pki/endorsement").json()["aik_pubkey_b64"]))


class OnPath(httpx.HTTPTransport):
    """A real HTTP transport to the router that rewrites what passes: an attacker on the path."""

    def __init__(self, *, endorsement=None, request=None, answer=None) -> None:
        super().__init__()
        self.rewrite_endorsement, self.rewrite_request, self.rewrite_answer = endorsement, request, answer

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/pki/activation" and self.rewrite_request:
            body = self.rewrite_request(json.loads(request.content))
            request = httpx.Request("POST", request.url, json=body)
        response = super().handle_request(request)
        rewrite = {"/pki/endorsement": self.rewrite_endorsement, "/pki/activation": self.rewrite_answer}
        hook = rewrite.get(request.url.path)
        if hook is None or response.status_code != 200:
            return response
        response.read()
        return httpx.Response(200, json=hook(response.json()))


# -- ca init -----------------------------------------------------------------------------------------


def test_ca_init_writes_the_key_0600_and_a_ca_certificate(tmp_path, capsys):
    result = CliRunner().invoke(cli, ["ca", "init", str(tmp_path / "ca")])
    assert result.exit_code == 0, result.output
    key = tmp_path / "ca" / "ca.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    certificate = x509.load_pem_x509_certificate((tmp_path / "ca" / "ca.pem").read_bytes())
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert certificate.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert main(["ca", "init", str(tmp_path / "ca")]) == 2  # never over an existing key
    assert "error[file_exists]" in capsys.readouterr().err



def test_a_ca_key_others_can_read_is_refused_as_ssh_refuses_such_a_key(tmp_path):
    """The CA key signs every AK certificate: loading one that group or others can read is a usage
    error that says how to fix it, never a silent use of a key that may have leaked."""
    from nomyo_audit.ca import load_authority
    from nomyo_audit.errors import ConfigurationError

    assert CliRunner().invoke(cli, ["ca", "init", str(tmp_path / "ca")]).exit_code == 0
    load_authority(tmp_path / "ca")  # as written: 0600
    (tmp_path / "ca" / "ca.key").chmod(0o640)
    with pytest.raises(ConfigurationError) as refused:
        load_authority(tmp_path / "ca")
    assert "0640" in refused.value.message and "chmod 600" in refused.value.message

# -- ca enroll: the success path ---------------------------------------------------------------------


def test_ca_enroll_issues_an_ak_certificate_that_validates_and_rides_on_every_quote(
    tpm_router, ca_dir, roots, tmp_path
):
    output = tmp_path / "chain.pem"
    args = ["ca", "enroll", "--ca", str(ca_dir), "--router", tpm_router.url, "--tpm-roots", str(roots)]
    result = CliRunner().invoke(cli, [*args, "--admin-key", ADMIN, "-o", str(output)])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["installed"] is True and facts["manufacturer"] == "id:00001014"
    leaf = x509.load_pem_x509_certificate(output.read_bytes())
    chain = [b64(leaf.public_bytes(serialization_der()))]
    assert quote_chain(tpm_router) == chain
    aik = router_aik(tpm_router)
    assert facts["aik_name"] == aik.name.hex()
    store = TrustStore.from_pem((ca_dir / "ca.pem").read_bytes())
    validation = validate_ak_chain([base64.b64decode(chain[0])], store, aik, at=datetime.now(timezone.utc))
    assert validation.manufacturer == "id:00001014"
    openssl = shutil.which("openssl")
    require(openssl is not None, "openssl is not installed")
    verified = subprocess.run(
        [openssl, "verify", "-x509_strict", "-CAfile", str(ca_dir / "ca.pem"), str(output)],
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0 and verified.stdout.strip().endswith(": OK"), verified.stderr


def serialization_der():
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.DER


# -- ca enroll: each bad input its own code, nothing issued ------------------------------------------


def _refused(router, authority, store, code, *, transport=None, spent=None, kind=EnrollmentError) -> None:
    client = httpx.Client(transport=transport) if transport else None
    with pytest.raises(kind) as caught:
        enroll_router(router.url, authority, store, admin_key=ADMIN, client=client, spent=spent)
    assert caught.value.code == code, caught.value
    assert quote_chain(router) is None  # nothing issued, nothing installed


def test_an_ek_certificate_chained_to_an_unknown_root_is_refused(swtpm, tpm_router, authority, ca_dir):
    stranger = TrustStore.from_pem((ca_dir / "ca.pem").read_bytes())  # a root, but not the TPM's maker
    _refused(tpm_router, authority, stranger, "cert_unchained", kind=CertificateError)
    root = x509.load_pem_x509_certificate(swtpm.ca_root_path.read_bytes()).public_bytes(serialization_der())
    with_root = OnPath(endorsement=lambda body: {**body, "ek_chain_b64": [*body["ek_chain_b64"], b64(root)]})
    _refused(tpm_router, authority, stranger, "cert_unknown_root", transport=with_root, kind=CertificateError)


def test_an_ek_certificate_for_another_ek_is_refused(tpm_router, authority, roots):
    from nomyo_audit.attest._swtpm import SwtpmProcess

    with SwtpmProcess(ek_certificates=False) as other:
        attester = make_attester(other.spec)
        try:
            other_ek = attester.endorsement()["ek_public_b64"]
        finally:
            attester.close()
    transport = OnPath(endorsement=lambda body: {**body, "ek_public_b64": other_ek})
    _refused(tpm_router, authority, TrustStore.from_directory(roots), "ek_mismatch", transport=transport)


def test_a_wrong_activation_secret_is_refused(tpm_router, authority, roots):
    transport = OnPath(answer=lambda body: {**body, "secret_b64": b64(bytes(32))})
    _refused(
        tpm_router,
        authority,
        TrustStore.from_directory(roots),
        "activation_wrong_secret",
        transport=transport,
    )


def test_a_replayed_activation_secret_is_refused(tpm_router, authority, roots):
    store, spent, seen = TrustStore.from_directory(roots), SpentSecrets(), []

    def record(body):
        seen.append(body["secret_b64"])
        return body

    enroll_router(
        tpm_router.url, authority, store, client=httpx.Client(transport=OnPath(answer=record)), spent=spent
    )
    assert quote_chain(tpm_router) is None  # no admin key given: issued, not installed
    replay = OnPath(answer=lambda body: {**body, "secret_b64": seen[0]})
    _refused(tpm_router, authority, store, "activation_replayed", transport=replay, spent=spent)


def test_an_activation_for_another_aik_is_refused(tpm_router, authority, roots):
    from nomyo_audit.attest._software import SoftwareTPM

    other = b64(SoftwareTPM("rsa2048-rsassa").aik_public)  # claims every attestation-key attribute
    store = TrustStore.from_directory(roots)
    swapped = OnPath(endorsement=lambda body: {**body, "aik_pubkey_b64": other})
    _refused(tpm_router, authority, store, "aik_mismatch", transport=swapped)
    own_name = b64(router_aik(tpm_router).name)  # the on-path attacker also claims the router's AIK
    renamed = OnPath(
        endorsement=swapped.rewrite_endorsement, request=lambda b: {**b, "aik_name_b64": own_name}
    )
    _refused(tpm_router, authority, store, "activation_failed", transport=renamed)


def test_a_software_attester_cannot_enroll(make_router, authority, roots):
    router = make_router(attester=make_attester("software"), admin_keys=(ADMIN,))
    _refused(router, authority, TrustStore.from_directory(roots), "no_endorsement")


# -- ca serve: routers enroll themselves -------------------------------------------------------------


def test_a_router_enrolls_itself_with_ca_serve(swtpm, tpm_router, authority, roots):
    app = create_ca_app(authority, TrustStore.from_directory(roots))
    with ServerThread(app) as ca:
        chain = enroll_with_ca(ca.url, tpm_router.config.attester)
    assert quote_chain(tpm_router) == [b64(der) for der in chain]
    store = TrustStore.from_pem(authority.certificate.public_bytes(serialization_pem()))
    validate_ak_chain(chain, store, router_aik(tpm_router), at=datetime.now(timezone.utc))


def serialization_pem():
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.PEM


def test_ca_serve_refuses_bad_and_replayed_answers(tpm_router, authority, roots, ca_dir):
    attester = tpm_router.config.attester
    app = create_ca_app(authority, TrustStore.from_directory(roots))
    with ServerThread(app) as ca:
        url = ca.url + ENROLLMENTS_PATH

        def code(response):
            return response.status_code, response.json()["error"]["code"]

        assert code(httpx.post(url, content=b"{")) == (400, "malformed_json")
        assert code(httpx.post(url, json={**attester.endorsement(), "x": 1})) == (400, "unknown_field")
        assert code(httpx.post(url + "/" + "0" * 32, json={"version": 1, "secret_b64": b64(b"s")})) == (
            404,
            "unknown_enrollment",
        )
        strangers = create_ca_app(authority, TrustStore.from_pem((ca_dir / "ca.pem").read_bytes()))
        with ServerThread(strangers) as other:
            refused = httpx.post(other.url + ENROLLMENTS_PATH, json=attester.endorsement())
            assert code(refused) == (422, "cert_unchained")
        challenge = httpx.post(url, json=attester.endorsement()).json()
        answer_url = f"{url}/{challenge['enrollment_id']}"
        wrong = httpx.post(answer_url, json={"version": 1, "secret_b64": b64(bytes(32))})
        assert code(wrong) == (422, "activation_wrong_secret")
        secret = attester.activate_credential(
            base64.b64decode(challenge["id_object_b64"]), base64.b64decode(challenge["encrypted_secret_b64"])
        )
        late = httpx.post(answer_url, json={"version": 1, "secret_b64": b64(secret)})
        assert code(late) == (422, "activation_replayed")  # one answer per challenge, right or wrong
        assert b64(secret) not in late.text
