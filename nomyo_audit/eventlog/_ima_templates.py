"""The fields of the Linux IMA templates: decode them from template data, rebuild them from ASCII.

Layouts from the kernel (security/integrity/ima/ima_template.c, ima_template_lib.c):

* a template is a list of fields; its *template data* is every field as ``u32 length || bytes``,
  except the original ``ima`` template, whose binary list entry carries a bare 20-byte ``d`` and a
  ``u32 strlen || name`` ``n`` (no NUL), with no template data length before them;
* ``d-ng``: ``"<algo>:" NUL digest``; ``d-ngv2``: ``"<ima|verity>:<algo>:" NUL digest``;
  ``n-ng``: the name and its NUL; ``sig``, ``buf``, ``modsig``: bytes (shown as hex in ASCII);
* the template hash of ``ima`` is ``H(d || n padded with NULs to 256 bytes)``
  (``ima_calc_field_array_hash``), of every other template ``H(template data)``.

Pure functions: no I/O. Errors are :class:`~nomyo_audit.errors.EventLogError` ``ima_malformed``.
"""

from __future__ import annotations

import binascii
import struct
from typing import NamedTuple

from ..errors import EventLogError

__all__ = [
    "TEMPLATES",
    "Fields",
    "ascii_template_data",
    "decode_template_data",
    "hash_input",
    "template_fields",
]

#: template name -> its field ids, for the templates the kernel defines and we decode.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "ima": ("d", "n"),
    "ima-ng": ("d-ng", "n-ng"),
    "ima-ngv2": ("d-ngv2", "n-ng"),
    "ima-sig": ("d-ng", "n-ng", "sig"),
    "ima-sigv2": ("d-ngv2", "n-ng", "sig"),
    "ima-buf": ("d-ng", "n-ng", "buf"),
    "ima-modsig": ("d-ng", "n-ng", "sig", "d-modsig", "modsig"),
}
#: Field ids a custom template (``ima_template_fmt=``, listed under its format as name) may use.
FIELD_IDS = frozenset({"d", "n", "d-ng", "d-ngv2", "n-ng", "sig", "buf", "d-modsig", "modsig"})
#: IMA_EVENT_NAME_LEN_MAX: the ``ima`` template's name is hashed padded to this + 1 bytes.
NAME_LEN_MAX = 255
_SHA1_SIZE = 20
#: Digest sizes of the kernel's hash_algo_name[] entries a file digest may use.
FILE_DIGEST_SIZES = {
    "md4": 16, "md5": 16, "sha1": 20, "rmd160": 20, "rmd256": 32, "rmd320": 40, "sha224": 28,
    "sha256": 32, "sha384": 48, "sha512": 64, "wp256": 32, "wp384": 48, "wp512": 64, "tgr128": 16,
    "tgr160": 20, "tgr192": 24, "sm3": 32, "sm3-256": 32, "streebog256": 32, "streebog512": 64,
    "sha3-256": 32, "sha3-384": 48, "sha3-512": 64,
}  # fmt: skip


class Fields(NamedTuple):
    """What an entry's template data says, decoded (None where the template has no such field)."""

    digest_algorithm: str | None
    file_digest: bytes | None
    path: str | None
    signature: bytes | None
    buffer: bytes | None


NO_FIELDS = Fields(None, None, None, None, None)


def _malformed(message: str) -> EventLogError:
    return EventLogError(message, code="ima_malformed")


def _text(raw: bytes) -> str:
    """A name as text: UTF-8, any other byte shown as a backslash escape (never an error)."""
    return raw.decode("utf-8", "backslashreplace")


def _split_fields(data: bytes, count: int, order: str) -> list[bytes]:
    fields, offset = [], 0
    for _ in range(count):
        if offset + 4 > len(data):
            raise _malformed("template data ends inside a field length")
        (size,) = struct.unpack_from(order + "I", data, offset)
        offset += 4
        if size > len(data) - offset:
            raise _malformed("a template field is longer than the template data")
        fields.append(data[offset : offset + size])
        offset += size
    if offset != len(data):
        raise _malformed("template data has bytes after its last field")
    return fields


def _digest_field(raw: bytes, *, typed: bool) -> tuple[str | None, bytes | None]:
    """``"<algo>:" NUL digest`` (``typed``: ``"<type>:<algo>:" NUL digest``); empty -> (None, None)."""
    if not raw:
        return None, None
    end = raw.find(b"\x00")
    if end < 1 or raw[end - 1 : end] != b":":
        raise _malformed("a d-ng digest field lacks its '<algorithm>:' prefix")
    prefix = raw[: end - 1].decode("ascii", "replace")
    algorithm = prefix.rsplit(":", 1)[-1] if typed else prefix
    if typed and ":" not in prefix:
        raise _malformed("a d-ngv2 digest field lacks its '<type>:' prefix")
    value = raw[end + 1 :]
    expected = FILE_DIGEST_SIZES.get(algorithm)
    if expected is not None and len(value) != expected:
        raise _malformed(f"a {algorithm} file digest of {len(value)} bytes (expected {expected})")
    return algorithm, value


def _string_field(raw: bytes) -> str:
    return _text(raw[:-1] if raw.endswith(b"\x00") else raw)


def template_fields(template: str) -> tuple[str, ...] | None:
    """The field ids of a named template, or of a custom one listed as its format (``d-ng|n-ng``)."""
    if template in TEMPLATES:
        return TEMPLATES[template]
    ids = tuple(template.split("|"))
    return ids if template != "ima" and all(field in FIELD_IDS for field in ids) else None


def decode_template_data(template: str, data: bytes, order: str = "<") -> Fields:
    """Decode ``data`` of a known ``template`` (``order``: ``"<"`` little-, ``">"`` big-endian lengths).

    The first digest field is the file digest, the first name field the path.
    """
    if template == "ima":
        if len(data) < _SHA1_SIZE + 4:
            raise _malformed("an 'ima' entry shorter than its digest and name length")
        return Fields("sha1", data[:_SHA1_SIZE], _text(data[_SHA1_SIZE + 4 :]), None, None)
    ids = template_fields(template)
    if ids is None:
        return NO_FIELDS
    values: dict[str, bytes] = {}
    for field_id, value in zip(ids, _split_fields(data, len(ids), order), strict=True):
        values.setdefault(field_id, value)
    algorithm: str | None = "sha1" if "d" in values else None
    file_digest = values.get("d")
    for field_id in ("d-ng", "d-ngv2"):
        if field_id in values and file_digest is None:
            algorithm, file_digest = _digest_field(values[field_id], typed=field_id == "d-ngv2")
    name = values.get("n-ng", values.get("n"))
    return Fields(
        algorithm,
        file_digest,
        None if name is None else _string_field(name),
        values.get("sig") or None,
        values.get("buf"),
    )


def hash_input(template: str, data: bytes) -> bytes:
    """The bytes the kernel hashes into each bank for an entry with this template data."""
    if template != "ima":
        return data
    name = data[_SHA1_SIZE + 4 :]
    return data[:_SHA1_SIZE] + name + bytes(NAME_LEN_MAX + 1 - len(name))


def _hex(token: bytes) -> bytes:
    try:
        return binascii.unhexlify(token)
    except (binascii.Error, ValueError):
        raise _malformed("a field that should be hex is not") from None


def _ascii_digest(token: bytes) -> bytes:
    """``sha256:<hex>`` (or ``ima:sha256:<hex>``) -> the d-ng field bytes."""
    if not token:
        return b""
    prefix, colon, value = token.rpartition(b":")
    if not colon or not prefix:
        raise _malformed("a d-ng digest without its '<algorithm>:' prefix")
    return prefix + b":\x00" + _hex(value)


def _framed(*fields: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(field)) + field for field in fields)


def _ascii_field(field_id: str, token: bytes) -> bytes:
    if field_id in ("d-ng", "d-ngv2", "d-modsig"):
        return _ascii_digest(token)
    if field_id in ("n", "n-ng"):
        return token + b"\x00"
    value = _hex(token)
    if field_id == "d" and len(value) != _SHA1_SIZE:
        raise _malformed("a 'd' digest field must be 20 bytes")
    return value


def _ascii_tokens(ids: tuple[str, ...], rest: bytes) -> list[bytes]:
    """Split the fields of an ASCII line: one space before each, the name takes what is left."""
    names = [index for index, field_id in enumerate(ids) if field_id in ("n", "n-ng")]
    if not names:
        tokens = rest.split(b" ", len(ids) - 1)
        return tokens + [b""] * (len(ids) - len(tokens))
    name_at = names[0]
    head = rest.split(b" ", name_at) if name_at else [rest]
    if len(head) <= name_at:
        raise _malformed(f"the line ends before its field {name_at + 1}")
    trailing = len(ids) - name_at - 1
    tail = head[-1].rsplit(b" ", trailing) if trailing else [head[-1]]
    tail += [b""] * (trailing + 1 - len(tail))
    return head[:-1] + tail


def ascii_template_data(template: str, rest: bytes) -> bytes:
    """Rebuild the binary template data of a known ``template`` from the fields of its ASCII line.

    ``rest`` is the line after the template name. The kernel writes each field after one space
    and nothing for an empty one; names are not escaped, so a name is everything between the
    fields before it and the (hex, space-free) fields after it.
    """
    ids = template_fields(template)
    if ids is None:
        raise _malformed(f"unknown template {template!r}")
    tokens = _ascii_tokens(ids, rest)
    if template == "ima":
        digest, name = _hex(tokens[0]), tokens[1]
        if len(digest) != _SHA1_SIZE or len(name) > NAME_LEN_MAX:
            raise _malformed("an 'ima' entry needs a 20-byte digest and a name of at most 255 bytes")
        return digest + struct.pack("<I", len(name)) + name
    return _framed(*(_ascii_field(field_id, token) for field_id, token in zip(ids, tokens, strict=True)))
