"""A real llama.cpp OpenAI-compatible server on 127.0.0.1, for tests and benchmarks."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx

from fineinstructions.models.embedded import embedded_llm_path

MODEL_ALIAS = "smollm2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """Starts, stops and restarts ``python -m llama_cpp.server`` on a fixed port."""

    def __init__(self, port: int | None = None, n_ctx: int = 1024) -> None:
        self.port = port or free_port()
        self.n_ctx = n_ctx
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120) -> "LlamaServer":
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "llama_cpp.server",
                "--model", str(embedded_llm_path()),
                "--model_alias", MODEL_ALIAS,
                "--host", "127.0.0.1",
                "--port", str(self.port),
                "--n_ctx", str(self.n_ctx),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("llama_cpp.server did not start in time")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None
