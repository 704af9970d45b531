"""An HTTP proxy in front of the moto S3 server that answers every ``fail_every``-th request
(and the next ``fail_next`` requests of method ``fail_method``, whatever their number) with 503 SlowDown instead of
forwarding it: the transient errors a real object store gives."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class FlakyProxy:
    def __init__(self, upstream: str, fail_every: int = 3):
        self.upstream, self.fail_every, self.fail_next, self.fail_method = upstream, fail_every, 0, "PUT"
        self.requests = self.failed = 0
        self.lock = threading.Lock()
        self.client = httpx.Client(base_url=upstream, timeout=60)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.client.close()

    def _should_fail(self, method: str = "") -> bool:
        with self.lock:
            self.requests += 1
            targeted = self.fail_next > 0 and method == self.fail_method
            fail = targeted or (self.fail_every > 0 and self.requests % self.fail_every == 0)
            self.fail_next -= targeted
            self.failed += fail
            return fail

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _relay(self):
                body = self._body()
                if proxy._should_fail(self.command):
                    # Reads get the 503 without its XML body: the SDK would copy that body into
                    # the caller's range buffer (Arrow then reports a non-retryable stream error).
                    payload = SLOW_DOWN if self.command not in ("GET", "HEAD") else b""
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"content-length"}}
                answer = proxy.client.request(self.command, self.path, headers=headers, content=body)
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in HOP_BY_HOP | {"content-length", "content-encoding"}:
                        self.send_header(key, value)
                # A HEAD answer has no body but announces the object's size.
                length = answer.headers.get("content-length", "0") if self.command == "HEAD" else len(answer.content)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.content)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        return Handler
