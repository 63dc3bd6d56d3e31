"""FastAGI: the same flows for dialplans that enter them with ``AGI(agi://host/FLOW)``.

``protocol`` frames the wire (bounded lines, timeouts), ``agicall`` implements the engine's
``Call`` protocol over it, ``listener`` listens, refuses addresses not allowed and owns one
session task per call.
"""

from .agicall import AgiCall
from .listener import AgiConfig, AgiServer
from .protocol import AgiError, AgiRequest, AgiSession

__all__ = ["AgiCall", "AgiConfig", "AgiError", "AgiRequest", "AgiServer", "AgiSession"]
