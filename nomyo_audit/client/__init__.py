"""The secure client: NOMYO protocol 1.0, a drop-in for the ``nomyo`` reference client's API.

:class:`SecureChatCompletion` is the OpenAI-shaped entry point (``await chat.create(model,
messages)``) and :class:`SyncSecureChatCompletion` its blocking twin; both sit on
:class:`SecureCompletionClient`, which encrypts each request to the router's key, decrypts the
reply, binds it to the request, verifies its TPM evidence, gates it with a policy and writes one
audit record per call. Every failure is an exception from :mod:`nomyo_audit.errors`.

The key helpers make, save and load the client's RSA key pair the way the client does
(:func:`generate_key_pair`, :func:`save_key_pair`, :func:`load_key_pair`). The wire constants
(:data:`SECURITY_TIERS`, the endpoint paths) belong to :mod:`nomyo_audit.wire`;
``SECURITY_TIERS`` is re-exported here, where earlier releases had it.
"""

from ..wire import SECURITY_TIERS
from ._chat import SecureChatCompletion, SyncSecureChatCompletion
from ._keys import (
    DEFAULT_KEY_BITS,
    KeyPair,
    generate_key_pair,
    load_key_pair,
    save_key_pair,
    save_private_key,
)
from ._secure_client import SecureCompletionClient
from ._settings import DEFAULT_TIMEOUT

__all__ = [
    "DEFAULT_KEY_BITS",
    "DEFAULT_TIMEOUT",
    "SECURITY_TIERS",
    "KeyPair",
    "SecureChatCompletion",
    "SecureCompletionClient",
    "SyncSecureChatCompletion",
    "generate_key_pair",
    "load_key_pair",
    "save_key_pair",
    "save_private_key",
]
