"""``SecureChatCompletion``: the OpenAI-shaped entry point, and its sync twin."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx

from ..audit._log import AuditLog
from ..errors import InvalidRequestError
from ..policy import Policy
from ._call import validate_security_tier
from ._secure_client import SecureCompletionClient

__all__ = ["SecureChatCompletion", "SyncSecureChatCompletion"]

T = TypeVar("T")


class SecureChatCompletion:
    """OpenAI-compatible chat completions, end-to-end encrypted to a NOMYO router.

    ``base_url``, ``allow_http``, ``api_key``, ``secure_memory`` and
    ``max_retries`` are the seed API's. The keyword-only extras:
    ``key_dir`` (load client keys from there, or generate and save them
    there once), ``key_password``, ``server_key_fingerprint`` (pin the
    router key), ``timeout`` (seconds for the whole call, retries included,
    and for each HTTP request in it; default 600, ``None`` means the
    default: no call waits forever), ``transport`` (any httpx async
    transport) and ``protocol`` (``"auto"``, the default: protocol 2 when the
    router offers it; ``"1.0"``; ``"2"``; None reads ``NOMYO_PROTOCOL``), ``service`` and ``tenant``
    (labels in every audit record, for fleet reports; None reads ``NOMYO_AUDIT_SERVICE``,
    ``NOMYO_AUDIT_TENANT``).
    """

    def __init__(
        self,
        base_url: str = "https://api.nomyo.ai",
        allow_http: bool = False,
        api_key: str | None = None,
        secure_memory: bool = True,
        max_retries: int = 2,
        *,
        key_dir: str | None = None,
        key_password: str | None = None,
        server_key_fingerprint: str | None = None,
        timeout: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        policy: Policy | str | os.PathLike[str] | None = None,
        audit_log: AuditLog | str | os.PathLike[str] | None = None,
        protocol: str | None = None,
        service: str | None = None,
        tenant: str | None = None,
    ) -> None:
        if audit_log is None and os.environ.get("NOMYO_AUDIT_LOG"):
            audit_log = os.environ["NOMYO_AUDIT_LOG"]
        self.client = SecureCompletionClient(
            router_url=base_url,
            allow_http=allow_http,
            max_retries=max_retries,
            secure_memory=secure_memory,
            server_key_fingerprint=server_key_fingerprint,
            timeout=timeout,
            transport=transport,
            policy=policy,
            audit_log=audit_log,
            protocol=protocol,
            service=service,
            tenant=tenant,
        )
        self.api_key = api_key
        self._key_dir = key_dir
        self._key_password = key_password

    async def create(self, model: str, messages: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        """Create a chat completion; returns the OpenAI-shaped dict plus ``_metadata``.

        Every OpenAI parameter in ``kwargs`` travels inside the encrypted
        payload. ``security_tier`` travels as the ``X-Security-Tier`` header
        and ``api_key`` (overriding the instance key) as ``Authorization:
        Bearer``; neither enters the payload. ``policy`` overrides the
        client's policy for this call. ``stream=True`` is refused before
        anything is sent: responses are encrypted whole.

        Raises :class:`InvalidRequestError` for a malformed model, messages, tier or
        ``stream=True`` (nothing is sent), and otherwise what
        :meth:`SecureCompletionClient.send_secure_request` raises.
        """
        security_tier = kwargs.pop("security_tier", None)
        api_key = kwargs.pop("api_key", None)
        policy = kwargs.pop("policy", None)
        validate_security_tier(security_tier)
        if kwargs.get("stream"):
            raise InvalidRequestError("stream=True is not supported: encrypted responses are sent whole")
        _validate_chat(model, messages)
        payload = {"model": model, "messages": messages, **kwargs}
        await self.client.ensure_keys(self._key_dir, self._key_password)
        return await self.client.send_secure_request(
            payload,
            str(uuid.uuid4()),
            api_key if api_key is not None else self.api_key,
            security_tier,
            policy=policy,
        )

    async def acreate(self, model: str, messages: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        """Async alias of :meth:`create` (the seed API has both)."""
        return await self.create(model, messages, **kwargs)

    async def aclose(self) -> None:
        """Close the pooled connections (and an audit log this instance opened)."""
        await self.client.aclose()

    async def __aenter__(self) -> SecureChatCompletion:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class SyncSecureChatCompletion:
    """Blocking calls for scripts and notebooks.

    It owns a private event loop on a daemon thread, so it works where a loop
    is already running (Jupyter) and keeps one connection pool across calls,
    which ``asyncio.run`` per call could not. Same arguments as
    :class:`SecureChatCompletion`::

        with SyncSecureChatCompletion("http://127.0.0.1:12434", allow_http=True) as chat:
            reply = chat.create("echo", [{"role": "user", "content": "hi"}])
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="nomyo-audit-sync", daemon=True)
        self._thread.start()
        self.chat = SecureChatCompletion(*args, **kwargs)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def create(self, model: str, messages: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        """:meth:`SecureChatCompletion.create`, blocking until the reply; raises what it raises."""
        return self._run(self.chat.create(model, messages, **kwargs))

    def close(self) -> None:
        """Close the connections and stop the private event loop (closing twice is a no-op)."""
        if self._loop.is_closed():
            return
        self._run(self.chat.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncSecureChatCompletion:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _validate_chat(model: object, messages: object) -> None:
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("model must be a non-empty string")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages must be a non-empty list")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequestError(f"messages[{index}] must be a dict with a string 'role'")
