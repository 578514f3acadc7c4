"""Use cases behind the socket: each takes the caller's identity and owns its transaction."""
from ds01q.services.context import Caller, Context

__all__ = ["Caller", "Context"]
