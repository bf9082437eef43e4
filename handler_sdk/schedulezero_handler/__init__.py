"""ScheduleZero handler SDK: write a handler as a plain class, serve it over ZMQ
and/or HTTP.

    from schedulezero_handler import method, serve

    class Greeter:
        @method
        def greet(self, name: str, times: int = 1) -> str:
            return " ".join([f"hello {name}"] * times)

    serve(Greeter(), protocols=["zmq"], port=4244)

or ``python -m schedulezero_handler mymodule:Greeter --protocol http --port 8080``.
Depends only on pyzmq; imports nothing from the operator. Imports only what a
ZMQ handler needs (the idle process stays small): the HTTP server, signing
(hmac/OpenSSL), the thread pool for sync methods, ``datetime`` and asyncio's
``ssl`` are loaded on first use (``_lean_asyncio`` explains the last one).
"""

from . import _lean_asyncio  # noqa: F401, I001 - first: before anything imports asyncio

from .executor import SDK_VERSION, Executor, PermanentError, RetryableError
from .methods import InvalidParams, JobContext, method
from .server import HandlerServer, ServeOptions, serve

__all__ = [
    "SDK_VERSION",
    "Executor",
    "HandlerServer",
    "InvalidParams",
    "JobContext",
    "PermanentError",
    "RetryableError",
    "ServeOptions",
    "method",
    "serve",
]
