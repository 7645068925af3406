"""The simulator run on its own (``python -m cachelayer.testing.simulator``) and the
``cachelayer demo`` built on it, both as subprocesses a user would start."""

from __future__ import annotations

import os
import queue
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import replicate
from conftest import run_cli
from replicate.helpers import FileOutput

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Runner:
    """``python -m cachelayer.testing.simulator`` in a subprocess, its banner parsed."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cachelayer.testing.simulator", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.banner: list[str] = []
        while True:
            line = self._lines.get(timeout=60)
            assert line, f"runner exited early: {self.proc.stderr.read() if self.proc.stderr else ''}"
            self.banner.append(line.rstrip("\n"))
            if line.startswith("Ctrl-C to stop."):
                break
        text = "\n".join(self.banner)
        match = re.search(r"export (.+)", text)
        assert match, text
        self.env = dict(pair.split("=", 1) for pair in match.group(1).split())
        self.base_url = self.env["REPLICATE_BASE_URL"]
        self.token = self.env["REPLICATE_API_TOKEN"]
        self.refs = re.findall(r"^  (examples/\S+)$", text, re.M)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put("")

    def client(self, **kwargs: Any) -> replicate.Client:
        client = replicate.Client(api_token=self.token, base_url=self.base_url, **kwargs)
        client.poll_interval = 0.05
        return client

    def stop(self, sig: int) -> tuple[int, str]:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        rest = []
        while True:
            line = self._lines.get(timeout=10)
            if not line:
                break
            rest.append(line)
        return code, "".join(rest)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_runner_over_http_serves_examples_to_the_real_client_and_stops_on_sigterm() -> None:
    runner = Runner("--seed", "3", "--prediction-duration", "0.2")
    try:
        assert runner.base_url.startswith("http://127.0.0.1:")
        files = runner.env["CACHELAYER_ALLOWED_HOSTS"]
        assert files.startswith("127.0.0.1:") and files != runner.base_url.removeprefix("http://")
        assert runner.env["CACHELAYER_TOKEN_HOSTS"] == files
        assert "examples/official-painter" in runner.refs
        painter = next(r for r in runner.refs if r.startswith("examples/painter:"))
        client = runner.client()

        url: Any = client.run("examples/official-painter", input={"prompt": "a cat"})
        assert isinstance(url, str) and url.startswith(f"http://{files}/")  # plain HTTP: no FileOutput
        assert httpx.get(url).content.startswith(PNG_MAGIC)
        urls: Any = client.run(painter, input={"num_outputs": 3})
        assert len(urls) == 3 and all(httpx.get(u).content.startswith(PNG_MAGIC) for u in urls)

        listed = [p for page in replicate.pagination.paginate(client.predictions.list) for p in page]
        assert len(listed) == 3 + 2  # the seeded history and the two runs
        assert {p.model for p in listed} == {"examples/official-painter", "examples/painter"}
        auth = {"Authorization": f"Bearer {runner.token}"}
        web = httpx.get(f"{runner.base_url}/v1/predictions?source=web", headers=auth).json()
        assert [p["source"] for p in web["results"]] == ["web"]  # seeded 1 of 3 on the web
        model = httpx.get(f"{runner.base_url}/v1/models/examples/official-painter", headers=auth).json()
        assert model["is_official"] is True
    finally:
        code, rest = runner.stop(signal.SIGTERM) if runner.proc.poll() is None else (None, "")
        runner.kill()
    assert code == 0 and "stopped" in rest


def test_runner_over_https_prints_its_ca_and_stops_on_ctrl_c() -> None:
    runner = Runner(
        "--https", "--seed", "0", "--prediction-duration", "0", "--token", "r8_local", "--latency-ms", "100"
    )
    try:
        assert runner.base_url.startswith("https://") and runner.token == "r8_local"
        ca_file = runner.env["CACHELAYER_CA_BUNDLE"]
        assert runner.env["SSL_CERT_FILE"] == ca_file and Path(ca_file).is_file()
        transport = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=ca_file))
        out: Any = runner.client(transport=transport).run(
            next(r for r in runner.refs if r.startswith("examples/painter:")), input={"num_outputs": 2}
        )
        assert [type(o) for o in out] == [FileOutput, FileOutput]  # HTTPS: as in production
        assert all(o.read().startswith(PNG_MAGIC) for o in out)
        assert "latency    100 ms before every response" in runner.banner
        start = time.monotonic()
        assert runner.client(transport=transport).predictions.list().results[0].status == "succeeded"
        assert time.monotonic() - start >= 0.1
    finally:
        code, rest = runner.stop(signal.SIGINT) if runner.proc.poll() is None else (None, "")
        runner.kill()
    assert code == 0 and "stopped" in rest
    assert not Path(ca_file).exists()  # the throwaway CA is removed on exit


def test_cachelayer_demo_runs_end_to_end() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CACHELAYER_", "REPLICATE_"))}
    done = run_cli(env, "demo", "--images", "2", "--url-ttl", "1")
    assert done.returncode == 0, done.stderr
    assert "demo ok: every output survived its source URL." in done.stdout
    assert done.stdout.count("identical") == 2
