"""The reference router (``nomyo-audit serve``); needs the ``router`` extra."""

from ._app import Attester, NoAttester, RouterConfig, create_app
from ._backends import Backend, BackendError, EchoBackend, UpstreamBackend
from ._server import RouterThread, ServerThread, run_router

__all__ = [
    "Attester",
    "Backend",
    "BackendError",
    "EchoBackend",
    "NoAttester",
    "RouterConfig",
    "RouterThread",
    "ServerThread",
    "UpstreamBackend",
    "create_app",
    "run_router",
]
