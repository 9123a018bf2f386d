"""The exceptions of coordinate 0.1.5, plus the error a failed call raises."""

from __future__ import annotations


class CoordinateException(Exception):
    pass


class ProgrammerError(CoordinateException):
    "API is getting something unexpected"


class LostLease(CoordinateException):
    "WorkUnit not owned by current client"


class NoSuchWorkUnitError(CoordinateException):
    "WorkUnit cannot be found"


class NoSuchWorkSpecError(CoordinateException):
    "work spec cannot be found"


class RpcError(CoordinateException):
    """The daemon answered the call with an error (0.1.5 raised a plain ``Exception`` with the same message)."""


class ProtocolError(CoordinateException):
    """The daemon's answer is not a CBOR-RPC response to the request sent."""
