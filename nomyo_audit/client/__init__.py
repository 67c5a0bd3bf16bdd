"""The secure client: NOMYO protocol 1.0, drop-in for ``nomyo``'s API."""

from ._chat import SecureChatCompletion, SyncSecureChatCompletion
from ._secure_client import SECURITY_TIERS, SecureCompletionClient

__all__ = ["SECURITY_TIERS", "SecureChatCompletion", "SecureCompletionClient", "SyncSecureChatCompletion"]
