"""Signed EAR JWTs (issue 15, section 2): every token nomyo-audit signs verifies with jwcrypto and
with PyJWT, JOSE code we did not write; a changed byte makes both refuse it; and the signer cannot
produce ``alg: none`` or an algorithm its key does not fix."""

from __future__ import annotations

import asyncio
import base64
import json

import jwt as pyjwt
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwcrypto import jwk
from jwcrypto import jwt as jjwt
from jwcrypto.common import JWException

from nomyo_audit.audit import generate_audit_key, key_fingerprint, load_private_key, sign_ear
from nomyo_audit.cli import cli
from nomyo_audit.errors import ConfigurationError, ExitCode

ALGORITHMS = {"ed25519": "EdDSA", "ecdsa-p256": "ES256"}


def public_pem(key) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def with_jwcrypto(token: str, key, alg: str) -> tuple[dict, dict]:
    """The claims and header, as jwcrypto verifies them (only ``alg`` accepted)."""
    checked = jjwt.JWT(jwt=token, key=jwk.JWK.from_pem(public_pem(key)), algs=[alg], expected_type="JWS")
    return json.loads(checked.claims), checked.token.jose_header


def with_pyjwt(token: str, key, alg: str) -> dict:
    return pyjwt.decode(token, key.public_key(), algorithms=[alg])


@pytest.fixture(params=sorted(ALGORITHMS))
def audit_key(request, tmp_path):
    """The audit key nomyo-audit generates (Ed25519), or a P-256 one: PEM files, as the CLI reads them."""
    private, _ = generate_audit_key(tmp_path / "ear.key", kind=request.param)
    return private, load_private_key(private), ALGORITHMS[request.param]


def test_a_token_verifies_with_jwcrypto_and_pyjwt(audit_key):
    _, key, alg = audit_key
    claims = {"eat_profile": "tag:github.com,2023:veraison/ear", "iat": 1700000000, "note": "é ✓"}
    token = sign_ear(claims, key)
    verified, header = with_jwcrypto(token, key, alg)
    assert verified == claims == with_pyjwt(token, key, alg)
    assert header == {"alg": alg, "kid": key_fingerprint(key.public_key()), "typ": "eat+jwt"}


@pytest.mark.parametrize("part", [0, 1, 2])
def test_a_changed_token_is_refused_by_both_libraries(audit_key, part):
    _, key, alg = audit_key
    token = sign_ear({"iat": 1, "submods": {"tpm": {"ear.status": "contraindicated"}}}, key)
    pieces = token.split(".")
    if part == 1:  # the claims say something else, the signature stays
        pieces[1] = base64.urlsafe_b64encode(b'{"iat":1,"submods":{"tpm":{"ear.status":"affirming"}}}')
        pieces[1] = pieces[1].rstrip(b"=").decode()
    else:
        raw = bytearray(base64.urlsafe_b64decode(pieces[part] + "=" * (-len(pieces[part]) % 4)))
        raw[-2] ^= 1
        pieces[part] = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    tampered = ".".join(pieces)
    with pytest.raises((JWException, ValueError)):
        with_jwcrypto(tampered, key, alg)
    with pytest.raises(pyjwt.PyJWTError):
        with_pyjwt(tampered, key, alg)


def test_another_key_of_the_same_kind_does_not_verify(audit_key, tmp_path):
    _, key, alg = audit_key
    token = sign_ear({"iat": 1}, key)
    other = (
        ec.generate_private_key(ec.SECP256R1()) if alg == "ES256" else ed25519.Ed25519PrivateKey.generate()
    )
    with pytest.raises(JWException):
        with_jwcrypto(token, other, alg)
    with pytest.raises(pyjwt.PyJWTError):
        with_pyjwt(token, other, alg)


@pytest.mark.parametrize(
    "key",
    [
        rsa.generate_private_key(65537, 2048),
        ec.generate_private_key(ec.SECP384R1()),
        ed25519.Ed25519PrivateKey.generate().public_key(),
        b"an HMAC secret",
        None,
    ],
    ids=["rsa", "p384", "public-key", "bytes", "none"],
)
def test_only_an_ed25519_or_p256_private_key_signs(key):
    """The algorithm follows from the key's type and nothing else: no argument, claim or header a
    caller passes can ask for none, HS256 or RS256."""
    with pytest.raises(ConfigurationError) as raised:
        sign_ear({"iat": 1}, key)
    assert raised.value.code == "ear_key_unsupported"


def test_the_header_is_never_taken_from_the_claims():
    key = ed25519.Ed25519PrivateKey.generate()
    token = sign_ear({"alg": "none", "typ": "JWT", "kid": "attacker", "iat": 1}, key)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "EdDSA", "kid": key_fingerprint(key.public_key()), "typ": "eat+jwt"}
    assert token.split(".")[2]  # always signed


def test_claims_no_json_holds_are_refused_before_signing():
    with pytest.raises(ConfigurationError) as raised:
        sign_ear({"iat": float("nan")}, ed25519.Ed25519PrivateKey.generate())
    assert raised.value.code == "ear_claims_invalid"


# -- verify --format ear-jwt on real replies ----------------------------------------------------------


def _reply(make_router, client_keys_dir) -> dict:
    from nomyo_audit import SecureChatCompletion
    from nomyo_audit.router._attestation import make_attester

    router = make_router(attester=make_attester("software"))

    async def chat():
        async with SecureChatCompletion(router.url, allow_http=True, key_dir=str(client_keys_dir)) as client:
            return await client.create("echo", [{"role": "user", "content": "sign my appraisal"}])

    return asyncio.run(chat())


def test_verify_signs_one_token_per_real_reply(make_router, client_keys_dir, audit_key, tmp_path):
    """A software-TPM router and the real client: each appraised record becomes one JWT a line,
    verified by both libraries; a reply edited afterwards is contraindicated in its token."""
    path, key, alg = audit_key
    reply = _reply(make_router, client_keys_dir)
    edited = json.loads(json.dumps(reply))
    edited["choices"][0]["message"]["content"] = "edited afterwards"
    replies = tmp_path / "replies.jsonl"
    replies.write_text(json.dumps(reply) + "\n" + json.dumps(edited) + "\n")
    result = CliRunner().invoke(cli, ["verify", "--format", "ear-jwt", "--sign", str(path), str(replies)])
    assert result.exit_code == ExitCode.FINDING, result.output
    tokens = result.stdout.splitlines()
    assert len(tokens) == 2
    (kept, _), (changed, _) = (with_jwcrypto(t, key, alg) for t in tokens)
    assert [with_pyjwt(t, key, alg) for t in tokens] == [kept, changed]
    assert kept["nomyo-audit.payload-id"] == reply["_metadata"]["payload_id"]
    tpm = kept["submods"]["tpm"]
    assert tpm["ear.status"] == "warning"  # a software AIK: never affirming
    assert tpm["ear.trustworthiness-vector"]["hardware"] == 0
    assert changed["submods"]["tpm"]["ear.status"] == "contraindicated"
    failing = [f["check"] for f in changed["submods"]["tpm"]["nomyo-audit.findings"] if f["status"] == "fail"]
    assert failing == ["nonce_binding"]


def test_verify_with_a_policy_carries_every_rule(make_router, client_keys_dir, tmp_path):
    private, _ = generate_audit_key(tmp_path / "ear.key")
    key = load_private_key(private)
    replies = tmp_path / "reply.json"
    replies.write_text(json.dumps(_reply(make_router, client_keys_dir)))
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "apiVersion: nomyo-audit/v1\nkind: AttestationPolicy\nmetadata: {name: strict}\n"
        "spec:\n  require_attestation: true\n  aik_trust: {mode: ek}\n"
    )
    args = ["verify", "--format", "ear-jwt", "--sign", str(private), "--policy", str(policy), str(replies)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == ExitCode.FINDING, result.output
    (token,) = result.stdout.splitlines()
    claims, _ = with_jwcrypto(token, key, "EdDSA")
    tpm = claims["submods"]["tpm"]
    assert tpm["ear.appraisal-policy-id"].startswith("strict@sha256:")
    assert {r["rule"]: r["status"] for r in tpm["nomyo-audit.policy"]["rules"]} == {
        "require_attestation": "pass",
        "aik_trust": "fail",
    }
    assert tpm["ear.trustworthiness-vector"]["instance-identity"] == 97  # the policy refused the AIK
    assert tpm["ear.status"] == "contraindicated"  # denied


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "ear-jwt"], "--format ear-jwt needs --sign"),
        (["--format", "ear", "--sign", "KEY"], "--sign signs --format ear-jwt"),
    ],
)
def test_ear_jwt_and_sign_go_together(tmp_path, args, message):
    evidence = tmp_path / "meta.json"
    evidence.write_text("{}")
    args = [a if a != "KEY" else str(tmp_path / "k") for a in args]
    result = CliRunner().invoke(cli, ["verify", *args, str(evidence)])
    assert result.exit_code == ExitCode.USAGE
    assert message in result.output


def test_an_rsa_key_is_refused_before_any_record_is_read(tmp_path, capsys):
    from nomyo_audit.cli import main

    private, _ = generate_audit_key(tmp_path / "rsa.key", kind="rsa-pss")
    args = ["verify", "--format", "ear-jwt", "--sign", str(private), "/nonexistent.json"]
    assert main(args) == ExitCode.USAGE
    assert "error[ear_key_unsupported]" in capsys.readouterr().err
