"""A real browser on gateway URLs: headless Chromium (Debian's ``chromium``) renders an
``<img>`` whose ``src`` is a gateway URL and seeks a ``<video>`` through it (HTTP Range), in
redirect mode (private moto bucket) and in proxy mode.

Skipped, with the reason, when no ``chromium`` binary is installed
(``apt-get install -y chromium``); ``CACHELAYER_REQUIRE_CHROMIUM=1`` makes that a failure.
"""

from __future__ import annotations

import http.server
import json
import os
import queue
import re
import shutil
import struct
import subprocess
import threading
import wave
import zlib
from io import BytesIO

import httpx
import pytest
from serving import ServeProcess, serve_env

from cachelayer.testing.simulator import File

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("CACHELAYER_REQUIRE_CHROMIUM", "") not in ("", "0"):
    raise RuntimeError("CACHELAYER_REQUIRE_CHROMIUM is set but no chromium binary is installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install -y chromium)")

SECONDS = 600  # of 8 kHz 8-bit mono audio: 4.8 MB, far more than preload=metadata buffers
SEEK_TO = 550.0


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A solid-colour RGB PNG (zlib-compressed scanlines, no dependencies)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def wav(seconds: int) -> bytes:
    buf = BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        tone = bytes(128 + int(60 * ((i // 10) % 2 * 2 - 1)) for i in range(8000))
        w.writeframes(tone * seconds)
    return buf.getvalue()


PAGE = """<!doctype html><html><body>
<img id="img" src="%(img)s">
<video id="v" preload="metadata" src="%(vid)s"></video>
<script>
const out = {};
function done() {
  if ("img" in out && "seek" in out && !out.sent) {
    out.sent = true;
    fetch("/report", {method: "POST", body: JSON.stringify(out)});
  }
}
const img = document.getElementById("img");
img.onload = () => { out.img = {w: img.naturalWidth, h: img.naturalHeight}; done(); };
img.onerror = () => { out.img = "error"; done(); };
const v = document.getElementById("v");
v.onloadedmetadata = () => { out.duration = v.duration; v.currentTime = %(seek)s; };
v.onseeked = () => {
  const s = v.seekable;
  out.seek = {t: v.currentTime, seekable: s.length ? [s.start(0), s.end(0)] : []};
  done();
};
v.onerror = () => { out.seek = "error " + (v.error && v.error.code); done(); };
</script></body></html>
"""


class _PageServer:
    """Serves the test page at ``/page.html`` and takes the page's ``POST /report``."""

    def __init__(self, page: str) -> None:
        reports: queue.Queue[dict] = queue.Queue()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = page.encode()
                self.send_response(200)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                reports.put(json.loads(raw))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.reports = reports
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/page.html"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def run_chromium(page: str, tmp_path) -> dict:
    """Open ``page`` in headless Chromium and return what it reports (fails after 120 s)."""
    server = _PageServer(page)
    log_path = tmp_path / "chromium.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        server.url,
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        return server.reports.get(timeout=120)
    except queue.Empty:
        raise AssertionError("chromium reported nothing:\n" + log_path.read_text()[-3000:]) from None
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        server.close()


@pytest.mark.parametrize("proxy", [False, True], ids=["redirect", "proxy"])
def test_chromium_renders_an_img_and_seeks_a_video_through_gateway_urls(
    proxy, make_layer, replicate_simulator, s3_server, s3_bucket, catalog_url, tmp_path
):
    if not catalog_url.startswith("sqlite"):
        pytest.skip("the browser does not care which catalog the gateway reads")
    sim = replicate_simulator
    image = File(png(37, 23, (200, 30, 90)), content_type="image/png", filename="cat.png")
    audio = File(wav(SECONDS), content_type="audio/wav", filename="tone.wav")
    sim.add_model("acme/media", outputs={"image": image, "video": audio})
    make_layer().catalog  # noqa: B018 -- migrate
    env = serve_env(sim, s3_server, s3_bucket, catalog_url, CACHELAYER_GATEWAY_PROXY="1" if proxy else "0")
    server = ServeProcess(env, tmp_path / "serve.log", "--workers", "0")
    try:
        layer = make_layer(url_mode="gateway", gateway_url=server.url)
        out = layer.run("acme/media", {})
        page = PAGE % {"img": out["image"], "vid": out["video"], "seek": SEEK_TO}

        result = run_chromium(page, tmp_path)

        assert result["img"] == {"w": 37, "h": 23}
        assert result["duration"] == pytest.approx(SECONDS, abs=0.5)
        assert result["seek"]["t"] == pytest.approx(SEEK_TO, abs=0.5)
        assert result["seek"]["seekable"][1] == pytest.approx(SECONDS, abs=0.5)  # ranges honoured
        metrics = httpx.get(f"{server.url}/metrics").text
        if proxy:
            assert re.search(r'cachelayer_gateway_requests_total\{status="206"\} [1-9]', metrics), metrics
        else:
            assert re.search(r'cachelayer_gateway_requests_total\{status="302"\} [2-9]', metrics), metrics
    finally:
        assert server.stop() == 0
        assert "Traceback" not in server.output()
