"""The one exception hierarchy of commy.

Every class carries a stable ``code`` string; the wire protocol sends that code and
the client raises the matching class again (`error_for_code`), so the mapping is 1:1.
"""

from __future__ import annotations


class CommyError(Exception):
    """Root of every error commy raises on purpose."""

    code = "INTERNAL_ERROR"

    def __init__(self, message: str = "", **details: object) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        self.details = details

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"code": self.code, "message": self.message}
        if self.details:
            out["details"] = self.details
        return out


class InternalError(CommyError):
    """An unexpected failure inside commy."""

    code = "INTERNAL_ERROR"


class NotFound(CommyError):
    """The named object does not exist."""

    code = "NOT_FOUND"


class ServiceNotFound(NotFound):
    """No such service."""

    code = "SERVICE_NOT_FOUND"


class TenantNotFound(NotFound):
    """No such tenant."""

    code = "TENANT_NOT_FOUND"


class VariableNotFound(NotFound):
    """No such variable in this service."""

    code = "VARIABLE_NOT_FOUND"


class AlreadyExists(CommyError):
    """An object with that name already exists."""

    code = "ALREADY_EXISTS"


class PermissionDenied(CommyError):
    """The principal lacks the permission this operation needs."""

    code = "PERMISSION_DENIED"


class Unauthorized(CommyError):
    """Authentication is missing or failed."""

    code = "UNAUTHORIZED"


class InvalidRequest(CommyError):
    """The request is malformed or names something invalid."""

    code = "INVALID_REQUEST"


class InvalidValue(InvalidRequest):
    """A value does not fit the variable's type; nothing was written."""

    code = "INVALID_VALUE"


class InvalidOffset(InvalidRequest):
    """An offset or size lies outside the file or the variable."""

    code = "INVALID_OFFSET"


class LimitExceeded(InvalidRequest):
    """A configured limit would be exceeded."""

    code = "LIMIT_EXCEEDED"


class Timeout(CommyError):
    """The operation did not finish in time."""

    code = "TIMEOUT"


class ConnectionLost(CommyError):
    """The connection to the server was lost."""

    code = "CONNECTION_LOST"


class ConfigError(CommyError):
    """Configuration is invalid (the message names the key and its source)."""

    code = "CONFIG_ERROR"


class PluginError(CommyError):
    """A plugin could not be loaded, registered or selected."""

    code = "PLUGIN_ERROR"


class FileError(CommyError):
    """A service file could not be created, opened or resized."""

    code = "FILE_ERROR"


class FileFormatError(FileError):
    """A service file is truncated, foreign or corrupted."""

    code = "FILE_FORMAT_ERROR"


class WatcherError(CommyError):
    """The file watcher failed."""

    code = "WATCHER_ERROR"


class SimdError(CommyError):
    """A diff kernel or variant is unavailable on this machine."""

    code = "SIMD_ERROR"


def _all_subclasses(cls: type[CommyError]) -> list[type[CommyError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_subclasses(sub))
    return out


def error_classes() -> dict[str, type[CommyError]]:
    """Code → class; every code is spelled by exactly one class."""
    table: dict[str, type[CommyError]] = {}
    for cls in _all_subclasses(CommyError):
        if cls.code in table and table[cls.code] is not cls:
            # CommyError and InternalError share INTERNAL_ERROR: keep the concrete one.
            if cls is CommyError:
                continue
        table[cls.code] = cls
    return table


def error_for_code(code: str, message: str = "", **details: object) -> CommyError:
    """Rebuild the exception a peer reported by its code (unknown codes → InternalError)."""
    cls = error_classes().get(code, InternalError)
    return cls(message, **details)
