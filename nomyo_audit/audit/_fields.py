"""What a record's own bytes say about it: its payload_id and time. Pure functions, no I/O.

The log's ``payload_id`` and ``time`` columns only mirror these, and every read checks them
against the bytes (:class:`ColumnCheck`), so editing a column cannot drop or pick a record.
This runs once per record on the append path and in ``log verify``: the fast path finds the
two fields by position in the canonical JSON, and any doubt falls back to parsing it.
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

__all__ = ["TIME_COLUMN_EXACT", "ColumnCheck", "record_fields"]

#: meta ``time_column`` = ``record``: the time column is exactly max(record time, previous).
#: Logs written before that kept the append clock (within a millisecond of the record's time).
TIME_COLUMN_EXACT = b"record"


def _fields_fast(data: bytes) -> tuple[bytes, bytes] | None:
    """(payload_id as JSON, time text) found by position in canonical JSON, or None.

    Keys are sorted, so the top level reads ``…"payload_id":"…","policy":…,"time":"…","tool":…``:
    the top-level payload_id is the last one before ``time`` (the client's policy result after it
    has no such key, but has a nested ``policy`` key of its own) and is followed by ``,"policy":``.
    A string with an escaped quote cannot end in front of ``,"policy":``. A record laid out
    otherwise returns None and is read by :func:`_fields_careful`.
    """
    end = data.rfind(b'","tool":')
    start = data.rfind(b',"time":"', 0, end)
    if end < 0 or start < 0:
        return None
    payload = data.rfind(b',"payload_id":"', 0, start)
    if payload < 0:
        return None
    close = data.find(b'"', payload + 15, start)
    if close < 0 or not data.startswith(b',"policy":', close + 1):
        return None
    return data[payload + 14 : close + 1], data[start + 9 : end]


def _fields_careful(data: bytes) -> tuple[str, str] | None:
    """(payload_id, time text) from the parsed record, or None when it carries no such strings."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    payload_id, moment = document.get("payload_id"), document.get("time")
    if not isinstance(payload_id, str) or not isinstance(moment, str):
        return None
    return payload_id, moment


def _parse_time(text: str) -> float | None:
    try:
        parsed = _dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None


def record_fields(data: bytes) -> tuple[str, float] | None:
    """(payload_id, time in epoch seconds) the record's bytes say, or None if they say neither.

    Never raises: bytes that are not a record with a string ``payload_id`` and an
    RFC 3339 ``time`` with an offset give None.
    """
    fast = _fields_fast(data)
    if fast is not None:
        raw = fast[0]
        try:
            plain = raw[:1] == b'"' and raw[-1:] == b'"' and b"\\" not in raw and len(raw) > 1
            payload_id = raw[1:-1].decode() if plain else json.loads(raw)
            moment = _parse_time(fast[1].decode())
        except (ValueError, UnicodeDecodeError):
            payload_id = moment = None
        if isinstance(payload_id, str) and moment is not None:
            return payload_id, moment
    careful = _fields_careful(data)
    if careful is None or (moment := _parse_time(careful[1])) is None:
        return None
    return careful[0], moment


_ENCODE_STRING = json.JSONEncoder(ensure_ascii=False).encode


class ColumnCheck:
    """Checks, row after row, that a row's ``payload_id`` and ``time`` columns are what its bytes say.

    ``exact``: the time column is max(record time, previous column) exactly; otherwise (a log
    written before) it may be the append clock, up to a millisecond after the record's time.
    The fast path compares bytes by position; any doubt goes to :func:`record_fields`.
    """

    def __init__(self, exact: bool) -> None:
        self.exact = exact
        self.previous = float("-inf")
        self._last_text = b""
        self._last_time = 0.0

    def problem(self, seq: int, data: bytes, payload_id: Any, column_time: Any) -> str | None:
        """What is wrong with this row's columns, in words that name the record, or None."""
        previous, self.previous = self.previous, column_time
        if not isinstance(payload_id, str) or not isinstance(column_time, (int, float)):
            return f"record {seq}: its payload_id or time column has the wrong type (altered)"
        fast = _fields_fast(data)
        moment: float | None = None
        if fast is not None and (
            fast[0] == b'"' + payload_id.encode() + b'"' or fast[0] == _ENCODE_STRING(payload_id).encode()
        ):
            text = fast[1]
            if text == self._last_text:
                moment = self._last_time
            else:
                moment = _parse_time(text.decode("utf-8", "replace"))
                if moment is not None:
                    self._last_text, self._last_time = text, moment
        if moment is None:
            fields = record_fields(data)
            if fields is None:
                return f"record {seq}: its bytes carry no payload_id and time"
            if fields[0] != payload_id:
                return f"record {seq}: its payload_id column disagrees with its bytes (altered)"
            moment = fields[1]
        if self.exact:
            good = column_time == max(moment, previous)
        else:
            # the append clock was max(clock, previous): the previous column only when the record's
            # own time is no later, else a clock reading within the record's millisecond
            appended = previous < column_time and moment <= column_time < moment + 0.001
            good = (column_time == previous and moment <= previous) or appended
        if not good:
            return f"record {seq}: its time column disagrees with its bytes (altered)"
        return None
