"""Configured limits (config ``[limits]``), checked where a request would exceed them.

Each refusal is a `LimitExceeded` (wire code ``LIMIT_EXCEEDED``) whose message names the
config key, so an operator knows what to raise. The message size limit lives in
``server.max_message_size`` because the transports enforce it too.
"""

from __future__ import annotations

from typing import Any

from commy import fileformat as ff
from commy.errors import LimitExceeded
from commy.vartypes import VarType


def check_new_service(config: Any, store: Any, tenant: str) -> None:
    limit = config.limits.max_services_per_tenant
    if len(store.list_services(tenant)) >= limit:
        raise LimitExceeded(
            f"tenant {tenant!r} already has {limit} services (limits.max_services_per_tenant)",
            limit=limit,
        )


def check_allocate(config: Any, vf: Any, vt: VarType) -> None:
    """Before allocating ``vt`` in ``vf``: variable count and the file size it would grow to."""
    limits = config.limits
    count = len(vf.names())
    if count >= limits.max_variables_per_service:
        raise LimitExceeded(
            f"service holds {count} variables; the limit is {limits.max_variables_per_service} "
            "(limits.max_variables_per_service)",
            limit=limits.max_variables_per_service,
        )
    header = ff.read_header(vf.accessor.view())
    end = ff.round_up(header.data_end, 8) + vt.storage_size
    size = vf.accessor.file_size()
    # The file grows by doubling (see VirtualServiceFile.allocate): judge the size it would reach.
    new_size = size if end <= size else ff.round_up(max(end, 2 * size), ff.PAGE)
    if new_size > limits.max_service_size:
        raise LimitExceeded(
            f"allocating {vt.spec} would grow the service file to {new_size} bytes; the limit is "
            f"{limits.max_service_size} (limits.max_service_size)",
            limit=limits.max_service_size,
        )


def check_subscribe(config: Any, subscribed: int) -> None:
    limit = config.limits.max_subscriptions
    if subscribed >= limit:
        raise LimitExceeded(
            f"this connection already has {limit} subscriptions (limits.max_subscriptions)", limit=limit
        )
