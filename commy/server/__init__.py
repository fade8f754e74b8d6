"""The commy server: tenants, services and variables behind any transport."""

from commy.server.core import Server, ServiceHandle, Session
from commy.server.events import ChangeEvent, VariableChange
from commy.server.store import Store

__all__ = ["ChangeEvent", "Server", "ServiceHandle", "Session", "Store", "VariableChange"]
