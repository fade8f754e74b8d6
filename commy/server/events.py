"""A committed change as one event object.

Everything that changes variables of a service ends in exactly one `ChangeEvent`: a write
through the server, a `ReportVariableChanges` from a local writer, or a diff the poller
found after a local mmap writer bumped the change sequence number. The server hands each
event to its sinks (`Server.add_event_sink`); the built-in sink pushes it to subscribed
connections, and a backplane can publish it to other servers and replay it there.
"""

from __future__ import annotations

from typing import Any

import attrs

from commy.protocol import value_to_wire
from commy.vartypes import parse_type


@attrs.frozen
class VariableChange:
    name: str
    #: the variable's version (its seqlock counter) after the change
    version: int
    #: the decoded value (int, float, bool, str, bytes or list)
    value: Any
    #: the type spec, e.g. ``"i64"`` or ``"str[32]"``
    type: str

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "value": value_to_wire(parse_type(self.type), self.value),
        }


@attrs.frozen
class ChangeEvent:
    tenant: str
    service: str
    service_id: str
    #: the service's change sequence number when the change was observed
    seq: int
    #: the layout generation (moves when variables are allocated or removed)
    layout: int
    variables: tuple[VariableChange, ...]
    #: where it came from: "write" (through the server), "report" or "diff"
    origin: str = "diff"

    def to_wire(self) -> dict[str, Any]:
        """The ``VariablesUpdated`` push (without envelope)."""
        return {
            "type": "VariablesUpdated",
            "tenant": self.tenant,
            "service": self.service,
            "seq": self.seq,
            "layout": self.layout,
            "variables": [v.to_wire() for v in self.variables],
        }
