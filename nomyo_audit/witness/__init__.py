"""A small C2SP tlog-witness (``nomyo-audit witness serve``): cosigns consistent log extensions only.

:class:`Witness` decides each add-checkpoint request (c2sp.org/tlog-witness), keeping the
latest cosigned checkpoint per log origin in a :class:`WitnessState`; :class:`WitnessServer`
serves it over HTTP with the standard library only, so no extra is needed.
"""

from ._server import WitnessServer
from ._state import LogHead, WitnessState
from ._witness import Reply, Witness

__all__ = ["LogHead", "Reply", "Witness", "WitnessServer", "WitnessState"]
