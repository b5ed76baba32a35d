"""Remote policy inference over openpi's websocket protocol (msgpack-encoded numpy over websockets).

``recap serve CHECKPOINT`` (:mod:`recap_core.serving.serve_cli`) runs a :class:`PolicyServer` around a
``PolicyRunner``; :class:`RemotePolicyRunner` is its client with the runner's interface, which the policy node uses
when its ``policy_server`` parameter is set. openpi's own ``WebsocketClientPolicy`` talks to the same server. The
wire format, the observation keys and the metadata: :mod:`recap_core.serving.protocol` and docs/nodes.md
("Remote inference"). Names are re-exported lazily: the client side never imports torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "PolicyServer": "recap_core.serving.server",
    "RemotePolicyRunner": "recap_core.serving.client",
    "RemotePolicyError": "recap_core.serving.client",
    "PolicyServerTimeout": "recap_core.serving.client",
    "normalise_server_url": "recap_core.serving.protocol",
    "packb": "recap_core.serving.msgpack_numpy",
    "unpackb": "recap_core.serving.msgpack_numpy",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
