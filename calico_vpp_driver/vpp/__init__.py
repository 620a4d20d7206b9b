"""Programming VPP: the API client (the only vpp_papi user) and its typed errors.

``client.VppClient`` owns the connection to VPP's API socket (one owner thread, pipelined
batches, every retval checked, missing messages reported at connect, VPP restarts detected);
``errors`` holds the exceptions it raises.
"""

from .client import (
    FEATURES,
    ConnectionInfo,
    Request,
    Result,
    VppClient,
    features_for_config,
)
from .errors import (
    MissingMessage,
    MissingMessagesError,
    VppApiError,
    VppClientClosed,
    VppConnectionError,
    VppConnectionLost,
    VppEncodeError,
    VppError,
    VppRestartedError,
    VppTimeoutError,
)

__all__ = [
    "FEATURES",
    "ConnectionInfo",
    "MissingMessage",
    "MissingMessagesError",
    "Request",
    "Result",
    "VppApiError",
    "VppClient",
    "VppClientClosed",
    "VppConnectionError",
    "VppConnectionLost",
    "VppEncodeError",
    "VppError",
    "VppRestartedError",
    "VppTimeoutError",
    "features_for_config",
]
