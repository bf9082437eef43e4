"""Dispatch: the operator's side of the handler wire protocol.

ZMQ (DEALER, many jobs per connection), ZMQ legacy (ScheduleZero REQ/REP), and
HTTP (keep-alive pooled) clients behind one ``Dispatcher``, plus the endpoint
pool that picks the least-loaded Ready endpoint and keeps per-endpoint in-flight
counts.
"""

from .clients import Dispatcher, DispatchResult, Endpoint
from .pool import EndpointPool

__all__ = ["DispatchResult", "Dispatcher", "Endpoint", "EndpointPool"]
