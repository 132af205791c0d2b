"""The HTTP side of `uffdtrace serve`: /metrics (the Prometheus text format,
or OpenMetrics when the scraper asks for it: prometheus-client decides),
/ready (200 once tracing, 503 with the reason before or after) and / (a
line of text naming both).  Threaded: a slow scraper holds up no other."""
from __future__ import annotations

import errno
import socket
import threading
from typing import Callable
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import CollectorRegistry

from .errors import UserError

Readiness = Callable[[], "tuple[bool, str]"]


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT, [IPV6]:PORT or :PORT (every interface) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UserError(f"--listen {text!r}: expected HOST:PORT, [IPV6]:PORT or :PORT "
                        "(port 0-65535), e.g. 127.0.0.1:9464")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise UserError(f"--listen {text!r}: write an IPv6 address in brackets, "
                        "e.g. [::1]:9464")
    return host or "0.0.0.0", int(port)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):     # no access log on stderr
        pass


def _server_class(host: str) -> type[ThreadingWSGIServer]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return type("Server", (ThreadingWSGIServer,), {"address_family": family})


def _text(start_response, status: str, body: str):
    start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
    return [body.encode()]


class Endpoint:
    """Bound at construction (a port in use is a UserError before any BPF
    is loaded); serves from a thread after start()."""

    def __init__(self, listen: str, registry: CollectorRegistry, ready: Readiness):
        host, port = parse_listen(listen)
        self._metrics = make_wsgi_app(registry)
        self._ready = ready
        try:
            self._server = make_server(host, port, self._app, _server_class(host),
                                       handler_class=_QuietHandler)
        except socket.gaierror as exc:
            raise UserError(f"cannot listen on {listen}: {exc.strerror}") from None
        except OSError as exc:
            why = "address already in use" if exc.errno == errno.EADDRINUSE else \
                exc.strerror or str(exc)
            raise UserError(f"cannot listen on {listen}: {why}") from None
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="uffdtrace-serve-http", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def _app(self, environ, start_response):
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            return self._metrics(environ, start_response)
        if path == "/ready":
            ready, why = self._ready()
            return _text(start_response, "200 OK" if ready else "503 Service Unavailable",
                         why + "\n")
        if path == "/":
            return _text(start_response, "200 OK",
                         "uffdtrace serve: metrics at /metrics, readiness at /ready\n")
        return _text(start_response, "404 Not Found", "not found: try /metrics\n")

    def start(self):
        self._thread.start()

    def close(self):
        if self._thread.is_alive():     # shutdown() waits for serve_forever() to end
            self._server.shutdown()
        self._server.server_close()
