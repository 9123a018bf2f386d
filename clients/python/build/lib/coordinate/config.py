"""Client configuration: the ``coordinate:`` block of a YAML file, as coordinate 0.1.5 reads it."""

from __future__ import annotations

import os
import random
from typing import Any, Mapping, Optional

import yaml

#: The name of the configuration block (0.1.5's ``coordinate.config_name``).
config_name = "coordinate"

#: The daemon's CBOR-RPC port.
DEFAULT_PORT = 5932


def load_config(path: str, block: str = config_name) -> dict[str, Any]:
    """The ``coordinate:`` block of the YAML file at `path` (an empty dict when the file has none)."""
    with open(path, "r", encoding="utf-8") as stream:
        document = yaml.safe_load(stream) or {}
    if not isinstance(document, dict):
        raise ValueError("%s: not a YAML mapping" % path)
    section = document.get(block) or {}
    if not isinstance(section, dict):
        raise ValueError("%s: %s is not a mapping" % (path, block))
    return section


def server_address(config: Mapping[str, Any]) -> tuple[str, int]:
    """Where to connect: ``address`` (``"host:port"``, a ``(host, port)`` pair or a list), else one of
    ``addresses`` at random, else ``$COORDINATE_ADDRESS``, else ``127.0.0.1:5932``."""
    address: Any = config.get("address")
    addresses = config.get("addresses")
    if not address and addresses:
        address = random.choice(list(addresses))
    if not address:
        address = os.environ.get("COORDINATE_ADDRESS") or "127.0.0.1:%d" % DEFAULT_PORT
    if isinstance(address, (tuple, list)):
        if len(address) != 2:
            raise ValueError("address must be (host, port), got %r" % (address,))
        return str(address[0]), int(address[1])
    if isinstance(address, str):
        host, _, port = address.rpartition(":")
        if not host:
            return address, DEFAULT_PORT
        return host.strip("[]"), int(port)
    raise ValueError("address must be 'host:port' or (host, port), got %r" % (address,))


def optional_float(config: Mapping[str, Any], key: str, default: Optional[float]) -> Optional[float]:
    value = config.get(key, default)
    return None if value is None else float(value)
