"""Real HTTP proxies in front of a test server that lose answers or cut streams, as networks do."""

from __future__ import annotations

import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

import requests


class _Proxy:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class LossyProxy(_Proxy):
    """Forwards POSTs to `target`, but swallows the answer to the first one (the connection is closed)."""

    def __init__(self, target: str) -> None:
        self.posts = 0
        self.keys: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                proxy.posts += 1
                proxy.keys.append(self.headers.get("Idempotency-Key", ""))
                answer = requests.post(target + self.path, data=body, headers=headers, timeout=10)
                if proxy.posts == 1:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)  # the job exists; its answer is lost
                    return
                self.send_response(answer.status_code)
                for name in ("Content-Type", "Location"):
                    if name in answer.headers:
                        self.send_header(name, answer.headers[name])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(Handler)


class CuttingProxy(_Proxy):
    """Relays GET streams from `target` chunk by chunk, but cuts the first one right after its first
    event (the socket closes mid-body). Records each request's Last-Event-ID and the first event's id."""

    def __init__(self, target: str) -> None:
        self.last_event_ids: list[str | None] = []
        self.cut_after_id: str | None = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                first = not proxy.last_event_ids
                proxy.last_event_ids.append(self.headers.get("Last-Event-ID"))
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                with requests.get(target + self.path, headers=headers, stream=True, timeout=30) as answer:
                    self.send_response(answer.status_code)
                    self.send_header("Content-Type", answer.headers.get("Content-Type", "text/plain"))
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    relayed = b""
                    for chunk in answer.iter_content(chunk_size=None):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                        relayed += chunk
                        if first and b"event: log" in relayed and relayed.endswith(b"\n\n"):
                            proxy.cut_after_id = relayed.split(b"id: ", 1)[1].split(b"\n", 1)[0].decode()
                            self.close_connection = True
                            self.connection.shutdown(socket.SHUT_RDWR)  # mid-body: no last chunk
                            return
                    self.wfile.write(b"0\r\n\r\n")

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(Handler)
