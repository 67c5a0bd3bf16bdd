"""The reference router under hostile input and hostile load, over real sockets on loopback.

* every malformed request is a 4xx naming the fault, checked before the backend or the TPM
  is called: deep JSON, odd client keys, malformed ``tools``, wrong types anywhere;
* a request whose headers or body do not arrive in time gets 408 and the connection closes;
* concurrent connections are capped; connections over the cap get 503 and are closed;
* running out of file descriptors is logged once per interval, not once per connection;
* ``serve``: a port in use is exit 2 with a clear message, and the banner names the real
  port, printed once the socket is bound.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import re
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from nomyo_audit.cli import main
from nomyo_audit.client._keys import load_key_pair
from nomyo_audit.router import NoAttester
from nomyo_audit.router._server import free_port
from nomyo_audit.wire import decrypt_package, encrypt_package, parse_package

CHAT = "/v1/chat/secure_completion"
HELLO = [{"role": "user", "content": "hello"}]


class RecordingAttester(NoAttester):
    """No TPM, but counts every call: a rejected request must never reach the TPM."""

    def __init__(self) -> None:
        self.calls = 0

    def attest_response(self, payload_id: str, completion: Mapping[str, Any]) -> dict[str, Any]:
        self.calls += 1
        return super().attest_response(payload_id, completion)


@pytest.fixture
def watched_router(make_router):
    return make_router(attester=RecordingAttester())


@pytest.fixture(scope="module")
def client_pem(client_keys_dir) -> str:
    return load_key_pair(client_keys_dir / "private_key.pem").public_key_pem


def headers_for(pem: str, **extra: str) -> dict[str, str]:
    return {"X-Payload-ID": "p-1", "X-Public-Key": urllib.parse.quote(pem), **extra}


def seal(router_keys, payload: object) -> bytes:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return encrypt_package(data, router_keys.private_key.public_key())


def post(router, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(router.url + CHAT, content=body, headers=headers, timeout=30)


def assert_rejected_untouched(router, response: httpx.Response, status: int, detail: str) -> None:
    """A 4xx that names the fault, and neither the model nor the TPM saw the request."""
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]
    assert router.config.backend.payloads == []
    assert router.config.attester.calls == 0


def deep(levels: int, inner: str = "0") -> str:
    return "[" * levels + inner + "]" * levels


# -- deep JSON ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        deep(100_000).encode(),
        b'{"version": "1.0", "encrypted_payload": ' + deep(100_000).encode() + b"}",
        b'{"a": ' * 100_000 + b"0" + b"}" * 100_000,
    ],
    ids=["array", "inside-a-field", "object"],
)
def test_a_deeply_nested_package_is_400(watched_router, client_pem, body):
    response = post(watched_router, body, headers_for(client_pem))
    assert_rejected_untouched(watched_router, response, 400, "JSON")


@pytest.mark.parametrize("levels", [100_000, 65])
def test_a_deeply_nested_payload_is_400(watched_router, router_keys, client_pem, levels):
    payload = '{"model": "m", "messages": [{"role": "user", "content": "x"}], "extension": %s}'
    body = seal(router_keys, (payload % deep(levels)).encode())
    response = post(watched_router, body, headers_for(client_pem))
    assert_rejected_untouched(watched_router, response, 400, "nested")


def test_nesting_within_the_limit_is_served(watched_router, router_keys, client_pem):
    payload = {"model": "m", "messages": HELLO, "extension": json.loads(deep(60))}
    response = post(watched_router, seal(router_keys, payload), headers_for(client_pem))
    assert response.status_code == 200


# -- client keys ----------------------------------------------------------------------------


def _der(tag: int, body: bytes) -> bytes:
    size = len(body)
    length = bytes([size]) if size < 128 else bytes([0x80 | (size.bit_length() + 7) // 8])
    if size >= 128:
        length += size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag]) + length + body


def _der_int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def rsa_public_pem(modulus_bits: int, exponent: int, *, even: bool = False) -> str:
    """A SubjectPublicKeyInfo PEM for any (n, e), including ones no library would generate."""
    modulus = random.Random(modulus_bits).getrandbits(modulus_bits) | (1 << (modulus_bits - 1)) | 1
    if even:
        modulus -= 1
    rsa_key = _der(0x30, _der_int(modulus) + _der_int(exponent))
    algorithm = _der(0x30, _der(0x06, bytes.fromhex("2a864886f70d010101")) + b"\x05\x00")
    spki = _der(0x30, algorithm + _der(0x03, b"\x00" + rsa_key))
    text = base64.b64encode(spki).decode()
    lines = "\n".join(text[i : i + 64] for i in range(0, len(text), 64))
    return f"-----BEGIN PUBLIC KEY-----\n{lines}\n-----END PUBLIC KEY-----\n"


@pytest.mark.parametrize(
    ("bits", "exponent", "detail"),
    [
        (1024, 65537, "at least 2048"),
        (8200, 65537, "at most 8192 bits"),
        (16384, 65537, "at most 8192 bits"),
        (4096, 2**64 + 1, "public exponent"),
        (2048, 2**2047 + 1, "public exponent"),
        (4096, 2**32 + 1, "public exponent"),
    ],
    ids=["1024-bit", "8200-bit", "16384-bit", "65-bit-exponent", "2048-bit-exponent", "33-bit-exponent"],
)
def test_odd_client_keys_are_400_before_anything_runs(
    watched_router, router_keys, client_pem, bits, exponent, detail
):
    body = seal(router_keys, {"model": "m", "messages": HELLO})
    response = post(watched_router, body, headers_for(rsa_public_pem(bits, exponent)))
    assert_rejected_untouched(watched_router, response, 400, detail)
    assert "X-Public-Key" in response.json()["detail"]


def test_an_even_modulus_is_400(watched_router, router_keys):
    body = seal(router_keys, {"model": "m", "messages": HELLO})
    response = post(watched_router, body, headers_for(rsa_public_pem(4096, 65537, even=True)))
    assert_rejected_untouched(watched_router, response, 400, "X-Public-Key")


@pytest.mark.parametrize(("bits", "exponent"), [(8192, 65537), (2048, 3), (4096, 2**32 - 1)])
def test_client_keys_at_the_caps_are_served(watched_router, router_keys, bits, exponent):
    body = seal(router_keys, {"model": "m", "messages": HELLO})
    response = post(watched_router, body, headers_for(rsa_public_pem(bits, exponent)))
    assert response.status_code == 200, response.text


# -- malformed tools, wrong types anywhere --------------------------------------------------

TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}

MALFORMED = [
    ({"tools": "lookup"}, "tools"),
    ({"tools": [1]}, "tools[0]"),
    ({"tools": [{"type": "function", "function": "lookup"}]}, "tools[0].function"),
    ({"tools": [{"type": "function"}]}, "tools[0].function"),
    ({"tools": [{"type": "function", "function": {"name": 5}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": ""}}]}, "tools[0].function.name"),
    ({"tools": [{"type": 3, "function": {"name": "f"}}]}, "tools[0].type"),
    ({"tools": [{**TOOL, "function": {"name": "f", "parameters": []}}]}, "tools[0].function.parameters"),
    ({"tools": [TOOL], "tool_choice": 5}, "tool_choice"),
    ({"tools": [TOOL], "tool_choice": {"type": "function", "function": "f"}}, "tool_choice.function"),
    ({"messages": [{"role": 5, "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": ["text"]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "assistant", "tool_calls": {}}]}, "messages[0].tool_calls"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"function": 1}]}]}, "messages[0].tool_calls[0]"),
    ({"messages": [{"role": "tool", "content": "x", "tool_call_id": 1}]}, "messages[0].tool_call_id"),
    ({"messages": "hello"}, "messages"),
    ({"model": 5}, "model"),
    ({"model": ["m"]}, "model"),
    ({"n": "2"}, "n"),
    ({"n": True}, "n"),
    ({"n": 0}, "n"),
    ({"n": 10_000}, "n"),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": True}, "temperature"),
    ({"top_p": [1]}, "top_p"),
    ({"max_tokens": 1.5}, "max_tokens"),
    ({"seed": "7"}, "seed"),
    ({"stop": 5}, "stop"),
    ({"stop": ["\n", 5]}, "stop"),
    ({"stream": "yes"}, "stream"),
    ({"user": 1}, "user"),
    ({"logit_bias": {"50256": "x"}}, "logit_bias"),
    ({"logit_bias": []}, "logit_bias"),
    ({"response_format": "json"}, "response_format"),
    ({"response_format": {"type": 1}}, "response_format.type"),
    ({"parallel_tool_calls": "no"}, "parallel_tool_calls"),
    ({"messages": [{"role": "user", "content": "\ud800"}]}, "not valid Unicode"),
    ({"metadata": {"note": "a\udfffb"}}, "not valid Unicode"),
    ({"metadata": {"\udfff": "key"}}, "not valid Unicode"),
]


@pytest.mark.parametrize(("change", "field"), MALFORMED, ids=[field for _, field in MALFORMED])
def test_wrong_types_anywhere_are_400_naming_the_field(
    watched_router, router_keys, client_pem, change, field
):
    payload = {"model": "m", "messages": HELLO, **change}
    response = post(watched_router, seal(router_keys, payload), headers_for(client_pem))
    assert_rejected_untouched(watched_router, response, 400, field)


@pytest.mark.parametrize(
    ("number", "detail"),
    [
        (b"NaN", "JSON"),
        (b"Infinity", "JSON"),
        (b"-Infinity", "JSON"),
        (b"1e400", "outside what JSON can carry"),
    ],
)
def test_numbers_json_cannot_carry_are_400(watched_router, router_keys, client_pem, number, detail):
    body = b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": ' + number + b"}"
    response = post(watched_router, seal(router_keys, body), headers_for(client_pem))
    assert_rejected_untouched(watched_router, response, 400, detail)


def test_every_openai_parameter_of_the_right_type_is_served(watched_router, router_keys, client_pem):
    payload = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}], "name": "u"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "content": "42", "tool_call_id": "c1"},
        ],
        "tools": [TOOL, {"type": "function", "function": {"name": "g", "description": "d", "strict": True}}],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "temperature": 0,
        "top_p": 0.5,
        "n": 2,
        "max_tokens": 12,
        "max_completion_tokens": None,
        "stop": "\n",
        "stream": False,
        "seed": 7,
        "user": "u-1",
        "logit_bias": {"50256": -100},
        "response_format": {"type": "json_object"},
        "parallel_tool_calls": False,
        "presence_penalty": -0.5,
        "frequency_penalty": 0.1,
        "logprobs": False,
        "metadata": {"k": "v"},
        "vendor_extension": {"anything": [1, "two", None]},
    }
    response = post(watched_router, seal(router_keys, payload), headers_for(client_pem))
    assert response.status_code == 200, response.text
    assert watched_router.config.backend.payloads == [payload]
    assert watched_router.config.attester.calls == 1


@pytest.mark.parametrize(
    "change",
    [
        {"tools": [{"type": "custom", "function": "not checked for other tool kinds"}]},
        {"tools": [{"type": "custom"}], "tool_choice": "required"},
        {"tools": [], "tool_choice": "auto"},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
    ],
)
def test_requests_the_model_may_understand_are_served(watched_router, router_keys, client_pem, change):
    payload = {"model": "m", "messages": HELLO, **change}
    response = post(watched_router, seal(router_keys, payload), headers_for(client_pem))
    assert response.status_code == 200, response.text


VALID = {
    "model": "m",
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]},
    ],
    "tools": [TOOL],
    "tool_choice": {"type": "function", "function": {"name": "lookup"}},
    "n": 1,
    "temperature": 0.5,
    "stop": ["\n"],
    "logit_bias": {"1": 1},
    "response_format": {"type": "text"},
}


def _paths(value: object, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


def _replaced(document: Any, path: tuple[Any, ...], value: object) -> Any:
    if not path:
        return value
    copy = json.loads(json.dumps(document))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return copy


def test_no_type_swap_anywhere_is_a_server_error(watched_router, router_keys, client_pem):
    """Every value of a rich valid request swapped for every JSON type: never a 5xx, and a
    4xx never reaches the model or the TPM."""
    swaps: list[object] = [None, 0, -1, 2.5, "", "s", [], [0], {}, {"k": 1}, True]
    backend = watched_router.config.backend
    with httpx.Client(base_url=watched_router.url, timeout=30) as client:
        for path in _paths(VALID):
            for swap in swaps:
                seen = len(backend.payloads)
                payload = _replaced(VALID, path, swap)
                body = seal(router_keys, payload)
                response = client.post(CHAT, content=body, headers=headers_for(client_pem))
                assert response.status_code in (200, 400), (path, swap, response.text)
                if response.status_code == 400:
                    assert len(backend.payloads) == seen, (path, swap)
    assert watched_router.config.attester.calls == len(backend.payloads)


def test_an_upstream_reply_nested_too_deeply_is_502(make_router, router_keys, client_pem):
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from nomyo_audit.router import ServerThread, UpstreamBackend

    async def completions(request: object) -> Response:
        return Response(b'{"choices": ' + deep(100_000).encode() + b"}", media_type="application/json")

    upstream = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
    with ServerThread(upstream) as up:
        router = make_router(backend=UpstreamBackend(up.url))
        response = post(router, seal(router_keys, {"model": "m", "messages": HELLO}), headers_for(client_pem))
    assert response.status_code == 502
    assert "upstream" in response.json()["detail"]


def test_a_failing_tpm_is_a_503_naming_no_content(make_router, router_keys, client_pem):
    class BrokenTPM(NoAttester):
        def attest_response(self, payload_id: str, completion: Mapping[str, Any]) -> dict[str, Any]:
            raise OSError(str(completion))

    router = make_router(attester=BrokenTPM())
    payload = {"model": "m", "messages": [{"role": "user", "content": "SECRET-4711"}]}
    response = post(router, seal(router_keys, payload), headers_for(client_pem))
    assert response.status_code == 503
    assert response.json()["detail"] == "attestation failed (OSError)"


# -- slow requests, connection caps ---------------------------------------------------------


@contextlib.contextmanager
def raw_connection(router, timeout: float = 10.0) -> Iterator[socket.socket]:
    sock = socket.create_connection((router.host, router.port), timeout=timeout)
    try:
        yield sock
    finally:
        sock.close()


def read_response(sock: socket.socket) -> bytes:
    """One response: up to its Content-Length, else until the server closes the connection."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            return received
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    declared = re.search(rb"content-length: (\d+)", head.lower())
    if declared is None:
        return head + b"\r\n\r\n" + body + read_until_closed(sock)
    while len(body) < int(declared.group(1)) and (chunk := sock.recv(65536)):
        body += chunk
    return head + b"\r\n\r\n" + body


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (times out otherwise)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_a_body_that_does_not_arrive_in_time_is_408_and_closed(make_router, client_pem):
    router = make_router(body_timeout=0.5)
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nX-Payload-ID: p\r\n"
        f"X-Public-Key: {urllib.parse.quote(client_pem)}\r\nContent-Length: 1000\r\n\r\n"
    )
    with raw_connection(router) as sock:
        started = time.monotonic()
        sock.sendall(head.encode() + b'{"version": ')
        reply = read_until_closed(sock)
        elapsed = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert b"did not arrive" in reply
    assert 0.4 < elapsed < 5
    assert router.config.backend.payloads == []
    assert httpx.get(router.url + "/pki/public_key").status_code == 200


@pytest.mark.parametrize("sent", [b"", b"POST /v1/chat/secure_completion HTTP/1.1\r\nHost: x\r\n"])
def test_headers_that_do_not_arrive_in_time_close_the_connection(make_router, sent):
    router = make_router(header_timeout=0.5)
    with raw_connection(router) as sock:
        started = time.monotonic()
        sock.sendall(sent)
        reply = read_until_closed(sock)
        elapsed = time.monotonic() - started
    assert reply == b"" or reply.startswith(b"HTTP/1.1 408 ")
    assert 0.4 < elapsed < 5


def test_a_dripping_keep_alive_connection_is_closed(make_router):
    """After a complete exchange, the next request's headers have the same deadline."""
    router = make_router(header_timeout=0.5)
    with raw_connection(router) as sock:
        sock.sendall(b"GET /pki/public_key HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        for part in (b"GET /pki/", b"public_key HTTP/1.1\r\n", b"Host: x\r\n"):
            sock.sendall(part)
            time.sleep(0.2)
        reply = read_until_closed(sock)
        elapsed = time.monotonic() - started
    assert reply == b"" or reply.startswith(b"HTTP/1.1 408 ")
    assert elapsed < 5


def test_concurrent_connections_are_capped(make_router):
    router = make_router(max_connections=8, header_timeout=30)
    stalled = [socket.create_connection((router.host, router.port), timeout=10) for _ in range(8)]
    try:
        time.sleep(0.2)
        with raw_connection(router) as sock:  # refused at once, before it sends anything
            reply = read_until_closed(sock)
        assert reply.startswith(b"HTTP/1.1 503 ")
        assert b"connection" in reply.lower() and b"close" in reply.lower()
        stalled.pop().close()
        time.sleep(0.2)
        assert httpx.get(router.url + "/pki/public_key", timeout=10).status_code == 200
    finally:
        for sock in stalled:
            sock.close()
    assert httpx.get(router.url + "/pki/public_key", timeout=10).status_code == 200


# -- the router as a process: EMFILE, serve -------------------------------------------------

#: A router process whose open-file limit is 64, and which fills its own descriptor table on
#: "fill" (stdin) and frees it on "free", so that accept() fails with EMFILE while it lasts.
ROUTER_PROCESS = r"""
import os, resource, sys, threading
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

def filler():
    held = []
    for line in sys.stdin:
        if line.strip() == "fill":
            try:
                while True:
                    held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                pass
            print("filled", flush=True)
        elif line.strip() == "free":
            while held:
                os.close(held.pop())
            print("freed", flush=True)

threading.Thread(target=filler, daemon=True).start()
from nomyo_audit.cli import main
sys.exit(main(sys.argv[1:]))
"""


class RouterProcess:
    """``nomyo-audit serve --port 0`` in a subprocess; stderr to a file whose size we measure."""

    def __init__(self, tmp_path: Path, key_file: Path, *extra: str) -> None:
        self.log = tmp_path / "router.log"
        self._log = self.log.open("wb")
        argv = ["serve", "--port", "0", "--key-file", str(key_file), "--log-level", "warning", *extra]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ROUTER_PROCESS, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.port = self._port_from_banner()

    def _port_from_banner(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            match = re.search(rb"on http://127\.0\.0\.1:(\d+) ", self.log.read_bytes())
            if match:
                return int(match.group(1))
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.05)
        raise AssertionError("no banner")

    def command(self, line: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() in ("filled", "freed")

    def get_key(self) -> int:
        return httpx.get(f"http://127.0.0.1:{self.port}/pki/public_key", timeout=10).status_code

    def serves_again(self, within: float = 10.0) -> bool:
        """Whether the router answers 200 again within ``within`` seconds (overload clears)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if self.get_key() == 200:
                    return True
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture
def router_process(tmp_path, client_keys_dir) -> Iterator[RouterProcess]:
    process = RouterProcess(tmp_path, client_keys_dir / "private_key.pem")
    try:
        yield process
    finally:
        process.stop()


def open_stalled(port: int, count: int) -> list[socket.socket]:
    """Up to ``count`` connections that never send a byte (bounded: 1 s to connect each)."""
    sockets = []
    for _ in range(count):
        try:
            sockets.append(socket.create_connection(("127.0.0.1", port), timeout=1))
        except OSError:
            break  # the backlog is full: the kernel refuses; the router is not involved
    return sockets


def test_many_stalled_connections_log_little_and_the_router_recovers(router_process):
    """1,100 stalled connections used to write 13.7 MB of tracebacks a minute. With 64 file
    descriptors the router caps its connections below what it can open, and logs little."""
    assert router_process.get_key() == 200
    before = router_process.log.stat().st_size
    stalled = open_stalled(router_process.port, 300)
    try:
        time.sleep(3)
        logged = router_process.log.stat().st_size - before
    finally:
        for sock in stalled:
            sock.close()
    assert logged < 4096, router_process.log.read_text()[-2000:]
    assert "Traceback" not in router_process.log.read_text()
    assert router_process.serves_again()
    assert router_process.proc.poll() is None


def test_accept_failures_are_logged_once_per_interval(router_process):
    """Descriptors exhausted elsewhere in the process: accept() fails with EMFILE for as long
    as that lasts. One line per interval says so; no traceback; service resumes after."""
    assert router_process.get_key() == 200
    router_process.command("fill")
    try:
        stalled = open_stalled(router_process.port, 100)
        time.sleep(3)
        for sock in stalled:
            sock.close()
    finally:
        router_process.command("free")
    text = router_process.log.read_text()
    assert "Traceback" not in text, text[-2000:]
    assert len(text.encode()) < 4096, text[-2000:]
    assert text.count("EMFILE") == 1, text
    assert router_process.serves_again()


_CHAT_HEAD = f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nX-Payload-ID: p\r\nX-Public-Key: x\r\n".encode()

HOSTILE_HTTP = [
    b"GET /\x80\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET http://elsewhere/pki/public_key HTTP/1.1\r\nHost: x\r\n\r\n",
    b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /pki/public_key HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    _CHAT_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    _CHAT_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\n{}{}{}{}\r\n",
    _CHAT_HEAD + b"Content-Length: -1\r\n\r\n",
    _CHAT_HEAD + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n",
    _CHAT_HEAD + b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    _CHAT_HEAD + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 100,  # a TLS ClientHello
    b"GET /pki/attestation?nonce=" + b"ab" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /pki/public_key?%ff=%fe&a=%zz HTTP/1.1\r\nHost: x\r\nX-A: \xff\xfe\r\n\r\n",
    _CHAT_HEAD.replace(b"X-Public-Key: x", b"X-Public-Key: %ff%fe%00") + b"Content-Length: 2\r\n\r\n{}",
    _CHAT_HEAD.replace(b"X-Payload-ID: p", b"X-Payload-ID: \xe9\xe9") + b"Content-Length: 2\r\n\r\n{}",
]


def test_hostile_http_is_a_4xx_and_never_a_traceback(tmp_path, client_keys_dir):
    """Broken framing, odd methods and bytes that are not HTTP: a 4xx or a closed connection,
    never a 5xx, never a traceback in the router's log, and the router keeps serving."""
    key_file = client_keys_dir / "private_key.pem"
    process = RouterProcess(tmp_path, key_file, "--header-timeout", "1", "--body-timeout", "1")
    try:
        assert process.get_key() == 200
        for request in HOSTILE_HTTP:
            with socket.create_connection(("127.0.0.1", process.port), timeout=5) as sock:
                sock.sendall(request)
                reply = b""
                with contextlib.suppress(ConnectionResetError):
                    reply = read_response(sock)
            status = re.match(rb"HTTP/1\.1 (\d{3}) ", reply)
            assert reply == b"" or (status and int(status.group(1)) < 500), (request[:60], reply[:200])
        assert process.get_key() == 200
    finally:
        process.stop()
    log = process.log.read_text()
    assert "Traceback" not in log and "Exception" not in log, log


def test_serve_banner_names_the_real_port_once_bound(router_process):
    # the fixture found the port in the banner; something listens there right away
    with socket.create_connection(("127.0.0.1", router_process.port), timeout=5):
        pass
    assert router_process.get_key() == 200


def test_serve_on_a_port_in_use_is_exit_2(capsys, client_keys_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        key_file = client_keys_dir / "private_key.pem"
        code = main(["serve", "--port", str(port), "--key-file", str(key_file)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"127.0.0.1:{port}" in err and "already in use" in err
    assert "Traceback" not in err and "nomyo-audit router on" not in err


def test_serve_on_an_unresolvable_host_is_exit_2(capsys, client_keys_dir):
    key_file = client_keys_dir / "private_key.pem"
    port = str(free_port())
    code = main(["serve", "--host", "no-such-host.invalid", "--port", port, "--key-file", str(key_file)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "no-such-host.invalid" in err and "Traceback" not in err


def test_an_accepted_request_gets_a_reply_that_decrypts(
    watched_router, router_keys, client_keys_dir, client_pem
):
    """The happy path, end to end, after all the checks."""
    payload = {"model": "m", "messages": HELLO, "tools": [TOOL]}
    response = post(watched_router, seal(router_keys, payload), headers_for(client_pem))
    private = load_key_pair(client_keys_dir / "private_key.pem").private_key
    reply = json.loads(decrypt_package(parse_package(response.content), private))
    assert reply["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "lookup"
    assert reply["_metadata"]["payload_id"] == "p-1"


@pytest.mark.parametrize("pcrs", ["sha256:24", "sha256:0,31", "sha512:0"])
def test_serve_with_a_pcr_selection_no_tpm_has_is_exit_2_before_listening(capsys, client_keys_dir, pcrs):
    """PC-client TPMs have PCRs 0-23; quoting one that does not exist must not crash the first reply."""
    key_file = client_keys_dir / "private_key.pem"
    code = main(["serve", "--port", "0", "--tpm", "software", "--pcrs", pcrs, "--key-file", str(key_file)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "--pcrs" in err and "Traceback" not in err and "nomyo-audit router on" not in err


def test_request_bodies_held_at_once_have_a_global_budget(make_router, router_keys, client_pem):
    """Connections x 16 MiB would be 16 GiB at the default cap: bodies buffered at once across
    connections are bounded instead, and a request over the budget is 503 and closed, never a
    grown heap. When the held body is gone, requests are served again."""
    router = make_router(max_buffered_bytes=1_000_000, body_timeout=30)
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nX-Payload-ID: p\r\n"
        f"X-Public-Key: {urllib.parse.quote(client_pem)}\r\nContent-Length: 900000\r\n\r\n"
    )
    with raw_connection(router) as holder:
        holder.sendall(head.encode() + b" " * 800_000)  # held, never finished
        time.sleep(0.5)
        refused = post(router, b" " * 400_000, headers_for(client_pem))
        assert refused.status_code == 503, refused.text
        assert "retry" in refused.json()["detail"]
        assert refused.headers.get("connection") == "close"
    time.sleep(0.5)
    served = post(router, seal(router_keys, {"model": "m", "messages": HELLO}), headers_for(client_pem))
    assert served.status_code == 200, served.text
    assert len(router.config.backend.payloads) == 1
