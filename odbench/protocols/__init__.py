"""Protocols: each one's train / validation / test split, and the scaling fitted on the training split.

``splits`` cuts a dataset into train / validation / test for each protocol;
``scaling`` standardizes a task on its training split.
"""

from odbench.protocols.splits import PROTOCOLS, Protocol, ProtocolError, get_protocol, resolve_class

__all__ = ["PROTOCOLS", "Protocol", "ProtocolError", "get_protocol", "resolve_class"]
