"""A range-capable HTTP server on 127.0.0.1 for fetch tests and benchmarks.

Serves files from one folder with `Range` support (what ffmpeg and yt-dlp need to seek), and a few
scripted misbehaviours keyed by path: missing files (404), paths that answer a given error status (`failing`),
an HTML page served as video, paths that
answer 429 a given number of times before they succeed, and paths whose GET sends its headers and then nothing
(`stalled`; HEAD answers normally) until the server stops. Counts the bytes it sends per path.
"""
from __future__ import annotations

import collections
import http.server
import mimetypes
import os
import re
import socket
import threading
from pathlib import Path

HTML_ERROR_PAGE = b"<!doctype html><html><head><title>Error</title></head><body>Video unavailable</body></html>"


class MediaServer:
    """`with MediaServer(folder) as s: s.url("clip.mp4")`."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.bytes_sent: collections.Counter[str] = collections.Counter()
        self.requests: collections.Counter[str] = collections.Counter()
        self.rate_limited: dict[str, int] = {}  # name -> remaining 429 answers
        self.html_pages: set[str] = set()
        self.missing: set[str] = set()
        self.failing: dict[str, int] = {}  # name -> the HTTP error status every request for it gets
        self.stalled: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.handle_error = lambda request, address: None  # clients hanging up mid-transfer is normal
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> "MediaServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # as web servers do: no 40 ms delayed-ACK stall per small response

            def log_message(self, *args):  # keep test output clean
                pass

            def setup(self):
                # a small send buffer, as over a real network: a client that hangs up early (yt-dlp's probe
                # request, ffmpeg's seeks) is not charged for a whole file pushed into loopback buffers
                self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
                super().setup()

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _serve(self, body: bool):
                name = self.path.split("?", 1)[0].lstrip("/")
                with server._lock:
                    server.requests[name] += 1
                    remaining_429 = server.rate_limited.get(name, 0)
                    if remaining_429:
                        server.rate_limited[name] = remaining_429 - 1
                if remaining_429:
                    return self._send_simple(429, b"Too Many Requests", "text/plain", body, {"Retry-After": "0"})
                if name in server.failing:
                    return self._send_simple(server.failing[name], b"Server Error", "text/plain", body)
                if name in server.html_pages:
                    return self._send_simple(200, HTML_ERROR_PAGE, "text/html", body)
                path = server.root / name
                if name in server.missing or not path.is_file():
                    return self._send_simple(404, b"Not Found", "text/plain", body)
                self._send_file(name, path, body)

            def _send_simple(self, code, payload, ctype, body, headers=None):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if body:
                    self.wfile.write(payload)

            def _send_file(self, name, path, body):
                size = path.stat().st_size
                start, end = 0, size - 1
                match = re.match(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
                if match and (match.group(1) or match.group(2)):
                    if match.group(1):
                        start = int(match.group(1))
                        end = int(match.group(2)) if match.group(2) else size - 1
                    else:
                        start = max(0, size - int(match.group(2)))
                    if start >= size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    end = min(end, size - 1)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                else:
                    self.send_response(200)
                # files without a suffix stand in for video pages that yt-dlp's generic extractor resolves
                self.send_header("Content-Type", mimetypes.guess_type(name)[0] or "video/mp4")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(end - start + 1))
                self.end_headers()
                if not body:
                    return
                if name in server.stalled:
                    self.wfile.flush()
                    server._stop.wait()  # headers sent, then nothing: a server that stalls
                    return
                with open(path, "rb") as f:
                    f.seek(start)
                    remaining = end - start + 1
                    while remaining:
                        chunk = f.read(min(remaining, 1 << 14))
                        if not chunk:
                            break
                        try:
                            self.wfile.write(chunk)
                        except (BrokenPipeError, ConnectionResetError):
                            break
                        with server._lock:
                            server.bytes_sent[name] += len(chunk)
                        remaining -= len(chunk)

        return Handler
