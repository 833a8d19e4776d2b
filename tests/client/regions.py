"""Fake regions for the client tests: real HTTP servers on 127.0.0.1 ephemeral ports that answer, fail or hang
on purpose, each in its own threads."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from infra.names import ARM_HEADER

MODES = ("ok", "503", "400", "reset", "hang", "garbage", "close-idle")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Triton and the ALB answer
    wbufsize = 1 << 16  # headers and body in one segment: no Nagle/delayed-ACK stall of 40 ms on reused connections
    server: FakeRegion

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests assert on what the client saw."""

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        srv = self.server
        srv.record(self.path, self.headers.get(ARM_HEADER))
        if srv.delay_s:
            srv.stop.wait(srv.delay_s)
        mode = srv.mode
        if mode == "hang":
            srv.stop.wait()  # never answers; released at teardown
            self.close_connection = True
        elif mode == "reset":  # RST instead of an answer: SO_LINGER 0, then close
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        elif mode == "503":
            self._answer(503, b'{"error": "unavailable"}')
        elif mode == "400":
            self._answer(400, b'{"error": "Request for unknown model"}')
        elif mode == "garbage":
            self._answer(200, b'{"outputs": []}')
        else:  # ok: the score of each row is the row's value of the first input, so tests know the ranking
            scores = json.loads(body)["inputs"][0]["data"]
            out = {"model_name": "ranker", "outputs": [{"name": "score", "shape": [len(scores), 1], "data": scores}]}
            self._answer(200, json.dumps(out).encode())
            # close-idle: the server drops the kept-alive connection without saying so, as an idle timeout does
            self.close_connection = mode == "close-idle"


class FakeRegion(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # the default 5 drops SYNs when many client threads connect at once

    def __init__(self, mode: str, delay_ms: float = 0, address: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        """`address`: where to listen (default an ephemeral port on 127.0.0.1; the rehearsal's load generator
        wants every region on one port, each on its own loopback address)."""
        assert mode in MODES, mode
        super().__init__(address, _Handler)
        self.mode, self.delay_s = mode, delay_ms / 1000
        self.stop = threading.Event()
        self.arrivals: list[float] = []  # time.monotonic() of each request
        self.paths: list[str] = []
        self.arms: list[str | None] = []  # the arm header of each request (None: not sent)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def hits(self) -> int:
        with self._lock:
            return len(self.arrivals)

    def record(self, path: str, arm: str | None = None) -> None:
        with self._lock:
            self.arrivals.append(time.monotonic())
            self.paths.append(path)
            self.arms.append(arm)

    def handle_error(self, request: object, client_address: object) -> None:
        """A reset or a hang leaves the handler writing to a closed socket: expected here."""

    def close(self) -> None:
        self.stop.set()
        self.shutdown()
        self.server_close()


def refused_url() -> str:
    """A loopback port nobody listens on: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"
