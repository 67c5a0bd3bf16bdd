"""Where the router sends a decrypted chat request: a built-in echo model or an upstream.

A backend is anything with ``async complete(payload) -> dict`` returning an
OpenAI ``chat.completion`` object. Failures raise :class:`BackendError`,
whose ``status`` the router answers with; their messages never quote the
request.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Protocol

import httpx

__all__ = ["Backend", "BackendError", "EchoBackend", "UpstreamBackend"]


class BackendError(Exception):
    """The model behind the router failed; ``status`` is the HTTP status the router answers with.

    Raised by a :class:`Backend`; the router turns it into a plain error reply (502, 503 or 504)
    whose text names no prompt or completion.
    """

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


class Backend(Protocol):
    """What the router needs from a model: one chat completion per decrypted payload.

    ``complete`` takes the OpenAI-style request the client sent and returns an OpenAI-style
    completion; it raises :class:`BackendError` when the model fails. ``aclose`` releases what the
    backend holds (connections) when the router stops.
    """

    async def complete(self, payload: dict[str, Any]) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


class EchoBackend:
    """A deterministic model for tests and demos: it answers ``echo: <last user text>``.

    With ``tools`` (and ``tool_choice`` not ``"none"``) it calls the first
    tool with ``{}``, so tool round-trips can be tested without a model.
    """

    name = "echo"

    async def complete(self, payload: dict[str, Any]) -> dict[str, Any]:
        messages = payload["messages"]
        text = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        request_digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        tools = payload.get("tools")
        message: dict[str, Any] = {"role": "assistant"}
        if isinstance(tools, list) and tools and payload.get("tool_choice", "auto") != "none":
            message["content"] = None
            message["tool_calls"] = [
                {
                    "id": "call_" + request_digest[:24],
                    "type": "function",
                    "function": {"name": _tool_name(tools[0]), "arguments": "{}"},
                }
            ]
            finish = "tool_calls"
        else:
            message["content"] = "echo: " + text
            finish = "stop"
        prompt_tokens = sum(len(_text_of(m.get("content")).split()) for m in messages)
        completion_tokens = len((message.get("content") or "").split())
        n = payload.get("n", 1) if isinstance(payload.get("n", 1), int) else 1
        return {
            "id": "chatcmpl-" + request_digest[:24],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": payload["model"],
            "choices": [
                {"index": i, "message": message, "finish_reason": finish} for i in range(max(1, min(n, 8)))
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    async def aclose(self) -> None:
        return None


class UpstreamBackend:
    """Forwards the decrypted request to an OpenAI-compatible ``/v1/chat/completions``."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 600.0) -> None:
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[: -len("/v1")]
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=10.0), headers=headers)

    async def complete(self, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._http.post(self.base_url + "/v1/chat/completions", json=payload)
        except httpx.TimeoutException:
            raise BackendError("upstream model timed out", 504) from None
        except httpx.HTTPError as exc:
            raise BackendError(f"upstream model unreachable ({type(exc).__name__})", 503) from None
        if response.status_code != 200:
            status = response.status_code if response.status_code in (400, 404, 429) else 502
            raise BackendError(f"upstream model answered HTTP {response.status_code}", status)
        try:
            body = response.json()
        except RecursionError:
            raise BackendError("upstream model answered with JSON nested too deeply", 502) from None
        except ValueError:
            raise BackendError("upstream model answered with invalid JSON", 502) from None
        if not isinstance(body, dict):
            raise BackendError("upstream model answered with a non-object", 502)
        return body

    async def aclose(self) -> None:
        await self._http.aclose()


def _tool_name(tool: object) -> str:
    """The first tool's function name; ``tool`` for any other kind of tool."""
    function = tool.get("function") if isinstance(tool, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) and name else "tool"


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(
            p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""
