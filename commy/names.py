"""Validation of user-supplied names. No name ever becomes part of a path."""

from __future__ import annotations

import re

from commy.errors import InvalidRequest

_OBJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,63}$")


def check_object_name(kind: str, name: object) -> str:
    """Tenant and service names: 1–64 of ``[A-Za-z0-9_.-]``, starting alphanumeric."""
    if not isinstance(name, str) or not _OBJECT.match(name) or ".." in name:
        raise InvalidRequest(
            f"invalid {kind} name {name!r}: use 1-64 letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return name


def check_variable_name(name: object) -> str:
    """Variable names: 1–64 of ``[A-Za-z0-9_.:-]``, starting with a letter or '_'."""
    if not isinstance(name, str) or not _VARIABLE.match(name):
        raise InvalidRequest(
            f"invalid variable name {name!r}: use 1-64 letters, digits, '_', '.', ':', '-', "
            "starting with a letter or '_'"
        )
    return name
