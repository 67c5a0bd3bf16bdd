"""Checking what a client sent before anything acts on it.

The router hands a decrypted request to a model and asks the TPM to quote its
reply; both are expensive and the TPM is shared. So a request is checked in
full first, and every fault is a :class:`RequestRejected` (a 4xx) that names
the field, never a crash later on:

* JSON: at most :data:`MAX_JSON_DEPTH` levels of nesting, numbers finite
  (no ``NaN``/``Infinity``, no ``1e400``), strings valid Unicode (no lone
  surrogates, which no UTF-8 encoder downstream accepts);
* the OpenAI chat fields the router or a model reads have the documented
  types; fields it does not know pass through, checked only as JSON;
* the client's RSA key: a modulus of :data:`MIN_CLIENT_KEY_BITS` to
  :data:`MAX_CLIENT_KEY_BITS` bits, odd, and an odd public exponent from 3 to
  :data:`MAX_PUBLIC_EXPONENT`. Bigger moduli or exponents make sealing the
  reply slow or impossible (OpenSSL refuses exponents over 64 bits for moduli
  over 3072 bits), which would only be found after the model and the TPM ran.

Error details never quote the request's content: only field paths and types.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from ..errors import ProtocolError
from ..wire import MAX_PUBLIC_EXPONENT, MAX_RSA_BITS, MIN_RSA_BITS, load_public_key_pem

__all__ = [
    "MAX_CLIENT_KEY_BITS",
    "MAX_JSON_DEPTH",
    "MAX_PUBLIC_EXPONENT",
    "MIN_CLIENT_KEY_BITS",
    "RequestRejected",
    "check_chat_request",
    "check_client_key",
    "check_payload_id",
    "load_json",
]

#: Nesting depth of a decrypted request; JSON Schemas in ``tools`` stay far below it.
MAX_JSON_DEPTH = 64
MIN_CLIENT_KEY_BITS = MIN_RSA_BITS
MAX_CLIENT_KEY_BITS = MAX_RSA_BITS
#: OpenAI allows ``n`` up to 128.
MAX_CHOICES = 128

_PAYLOAD_ID = re.compile(r"[\x21-\x7e]{1,128}")
#: Keys shown in error details as they are; any other key is shown as ``<key>`` (never echo content).
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


class RequestRejected(Exception):
    """The request is answered with ``status`` and a ``detail`` safe to send back: a 4xx for
    what the client sent (everything here), or the backend's or TPM's 5xx (raised by the app)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _bad(detail: str) -> RequestRejected:
    return RequestRejected(400, detail)


def check_payload_id(value: str | None) -> str:
    """``X-Payload-ID``: 1-128 printable ASCII characters (clients send a UUID)."""
    if value is None or not _PAYLOAD_ID.fullmatch(value):
        raise _bad("missing or over-long X-Payload-ID header: 1-128 printable ASCII characters")
    return value


def check_client_key(pem: str) -> rsa.RSAPublicKey:
    """The ``X-Public-Key`` the reply is sealed to, within the caps above."""
    try:
        key = load_public_key_pem(pem, what="X-Public-Key")
    except ProtocolError as exc:
        raise _bad(exc.message) from None
    numbers = key.public_numbers()
    if key.key_size > MAX_CLIENT_KEY_BITS:
        raise _bad(f"X-Public-Key is {key.key_size} bits; at most {MAX_CLIENT_KEY_BITS} bits are accepted")
    if numbers.n % 2 == 0:
        raise _bad("X-Public-Key has an even modulus, which is not an RSA key")
    if numbers.e % 2 == 0 or not 3 <= numbers.e <= MAX_PUBLIC_EXPONENT:
        raise _bad(
            f"X-Public-Key has a {numbers.e.bit_length()}-bit public exponent; "
            "it must be odd and from 3 to 2^32-1 (65537 is usual)"
        )
    return key


# -- JSON ---------------------------------------------------------------------------------


def _refuse_constant(name: str) -> None:
    raise ValueError(name)


def load_json(data: bytes | bytearray, what: str) -> Any:
    """Parse ``data`` as strict JSON no deeper than :data:`MAX_JSON_DEPTH`.

    Every pass is in C, so a hostile 16 MiB body costs about what parsing it
    does: ``json`` recurses in C and raises ``RecursionError`` long before the
    stack is at risk; re-encoding the document finds lone surrogates and
    numbers such as ``1e400``; the depth is measured on the re-encoded text.
    """
    try:
        document = json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise _too_deep(what) from None
    except (ValueError, UnicodeDecodeError):
        raise _bad(f"{what} is not valid JSON") from None
    try:
        text = json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(f"{what} is not valid Unicode: a string holds a lone surrogate") from None
    except ValueError:
        raise _bad(f"{what} holds a number outside what JSON can carry (such as 1e400)") from None
    except RecursionError:
        raise _too_deep(what) from None
    if _deeper_than(encoded, MAX_JSON_DEPTH):
        raise _too_deep(what)
    return document


def _too_deep(what: str) -> RequestRejected:
    return _bad(f"{what} is not valid JSON here: nested more than {MAX_JSON_DEPTH} levels deep")


_STRING_LITERAL = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_OPEN_CLOSE = bytes.maketrans(b"{}", b"[]")
_NOT_A_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))


def _deeper_than(encoded: bytes, limit: int) -> bool:
    """Whether compact JSON text nests more than ``limit`` containers: strings removed, only
    brackets kept, then innermost ``[]`` pairs peeled off ``limit`` times; anything left is deeper."""
    shape = _STRING_LITERAL.sub(b"", encoded).translate(_OPEN_CLOSE, _NOT_A_BRACKET)
    for _ in range(limit):
        if not shape:
            return False
        shape = shape.replace(b"[]", b"")
    return bool(shape)


def _join(path: str, key: str) -> str:
    shown = key if _PLAIN_KEY.fullmatch(key) else "<key>"
    return f"{path}.{shown}" if path else shown


# -- the chat request ---------------------------------------------------------------------

Check = Callable[[object, str], None]

_TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}


def _mismatch(path: str, wanted: str, value: object) -> RequestRejected:
    found = "null" if value is None else _TYPE_NAMES.get(type(value), type(value).__name__)
    return _bad(f"payload.{path} must be {wanted}, not {found}")


def _as_object(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _mismatch(path, "an object", value)
    return value


def _as_array(value: object, path: str, of: str) -> list[Any]:
    if not isinstance(value, list):
        raise _mismatch(path, f"an array of {of}", value)
    return value


def _object(value: object, path: str) -> None:
    _as_object(value, path)


def _string(value: object, path: str) -> None:
    if not isinstance(value, str):
        raise _mismatch(path, "a string", value)


def _non_empty_string(value: object, path: str) -> None:
    if not isinstance(value, str) or not value:
        raise _mismatch(path, "a non-empty string", value)


def _boolean(value: object, path: str) -> None:
    if not isinstance(value, bool):
        raise _mismatch(path, "true or false", value)


def _integer(value: object, path: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _mismatch(path, "an integer", value)


def _number(value: object, path: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise _mismatch(path, "a number", value)


def _choices(value: object, path: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_CHOICES:
        raise _bad(f"payload.{path} must be an integer from 1 to {MAX_CHOICES}")


def _stop(value: object, path: str) -> None:
    if isinstance(value, str):
        return
    for index, item in enumerate(_as_array(value, path, "strings (or a string)")):
        _string(item, f"{path}[{index}]")


def _logit_bias(value: object, path: str) -> None:
    for token, bias in _as_object(value, path).items():
        _number(bias, f"{path}.{_join('', token)}")


def _typed_object(value: object, path: str) -> None:
    """``response_format`` and alike: an object with a string ``type``."""
    _fields(_as_object(value, path), path, {"type": _string})


def _function(value: object, path: str) -> None:
    """A tool's ``function``: a name, and optionally a description and a JSON Schema."""
    function = _as_object(value, path)
    _non_empty_string(function.get("name"), f"{path}.name")
    _fields(function, path, {"description": _string, "parameters": _object, "strict": _boolean})


def _tools(value: object, path: str) -> None:
    for index, item in enumerate(_as_array(value, path, "tools")):
        tool = _as_object(item, f"{path}[{index}]")
        kind = tool.get("type", "function")
        _string(kind, f"{path}[{index}].type")
        if kind == "function":
            _function(tool.get("function"), f"{path}[{index}].function")


def _tool_choice(value: object, path: str) -> None:
    if isinstance(value, str):
        return
    if not isinstance(value, dict):
        raise _mismatch(path, '"none", "auto", "required" or an object', value)
    _fields(value, path, {"type": _string})
    if "function" in value:
        function = _as_object(value["function"], f"{path}.function")
        _non_empty_string(function.get("name"), f"{path}.function.name")


def _content(value: object, path: str) -> None:
    """A message's ``content``: text, null, or an array of typed parts."""
    if value is None or isinstance(value, str):
        return
    if not isinstance(value, list):
        raise _mismatch(path, "a string, null or an array of parts", value)
    for index, item in enumerate(value):
        _fields(_as_object(item, f"{path}[{index}]"), f"{path}[{index}]", {"type": _string, "text": _string})


def _tool_calls(value: object, path: str) -> None:
    for index, item in enumerate(_as_array(value, path, "tool calls")):
        call = _as_object(item, f"{path}[{index}]")
        _fields(call, f"{path}[{index}]", {"id": _string, "type": _string})
        function = _as_object(call.get("function"), f"{path}[{index}].function")
        _fields(function, f"{path}[{index}].function", {"name": _string, "arguments": _string})


_MESSAGE_FIELDS: Mapping[str, Check] = {
    "content": _content,
    "name": _string,
    "tool_calls": _tool_calls,
    "tool_call_id": _string,
}


def _messages(value: object, path: str) -> None:
    if not isinstance(value, list) or not value:
        raise _mismatch(path, "a non-empty array of messages", value)
    for index, item in enumerate(value):
        message = _as_object(item, f"{path}[{index}]")
        _non_empty_string(message.get("role"), f"{path}[{index}].role")
        _fields(message, f"{path}[{index}]", _MESSAGE_FIELDS)


#: Optional request fields and their checks; ``null`` is accepted for each, as OpenAI does.
_OPTIONAL: Mapping[str, Check] = {
    "tools": _tools,
    "tool_choice": _tool_choice,
    "stream": _boolean,
    "n": _choices,
    "temperature": _number,
    "top_p": _number,
    "presence_penalty": _number,
    "frequency_penalty": _number,
    "max_tokens": _integer,
    "max_completion_tokens": _integer,
    "seed": _integer,
    "top_logprobs": _integer,
    "logprobs": _boolean,
    "parallel_tool_calls": _boolean,
    "stop": _stop,
    "user": _string,
    "logit_bias": _logit_bias,
    "response_format": _typed_object,
    "metadata": _object,
    "stream_options": _object,
}


def _fields(document: Mapping[str, Any], path: str, checks: Mapping[str, Check]) -> None:
    for name, check in checks.items():
        value = document.get(name)
        if value is not None:
            check(value, f"{path}.{name}" if path else name)


def check_chat_request(payload: object) -> dict[str, Any]:
    """A decrypted chat request the backend can use, or :class:`RequestRejected`."""
    if not isinstance(payload, dict):
        raise _bad("decrypted payload must be a JSON object")
    _non_empty_string(payload.get("model"), "model")
    _messages(payload.get("messages"), "messages")
    _fields(payload, "", _OPTIONAL)
    if payload.get("stream"):
        raise _bad("stream: true is not supported for encrypted inference")
    return payload
