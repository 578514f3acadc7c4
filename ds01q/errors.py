"""ds01q's exceptions.

    Ds01qError                 base; str(e) is a one-line message for the user
    ├── ConfigError            a config file is malformed; names the key path
    ├── RequestError           a request is invalid (bad option, unknown profile, ...)
    │   └── LimitError         a request breaks a hard limit and can never run
    ├── NotFound               no such job / slice
    ├── Conflict               another writer changed the job first (compare-and-set lost)
    ├── PermissionDenied       caller may not do this
    ├── ServerUnavailable      the client cannot reach the daemon
    │   └── Busy               the daemon asks this connection to come back soon (per-user cap)
    ├── InventoryError         GPU inventory cannot be read (no driver, ...)
    └── ExecutorError          the container/process could not be started or stopped
"""
from __future__ import annotations


class Ds01qError(Exception):
    """Base class. The message is one line, fit to print to a user."""

    code = "error"


class ConfigError(Ds01qError):
    code = "config"


class RequestError(Ds01qError):
    code = "request"


class LimitError(RequestError):
    code = "limit"


class NotFound(Ds01qError):
    code = "not_found"


class Conflict(Ds01qError):
    code = "conflict"


class PermissionDenied(Ds01qError):
    code = "permission"


class ServerUnavailable(Ds01qError):
    code = "unavailable"


class Busy(ServerUnavailable):
    """The daemon turned this connection away for now (the user's connection cap): retry soon."""

    code = "busy"


class InventoryError(Ds01qError):
    code = "inventory"


class ExecutorError(Ds01qError):
    code = "executor"


BY_CODE: dict[str, type[Ds01qError]] = {
    c.code: c
    for c in (Ds01qError, ConfigError, RequestError, LimitError, NotFound, Conflict, PermissionDenied,
              ServerUnavailable, Busy, InventoryError, ExecutorError)
}
