"""A real KServe v2 inference server (MLServer) on free loopback ports, owned by the test that starts it.

MLServer runs in its own virtualenv (`.venv-kserve`, built by `make test`): it pins fastapi < 0.116, and the
station's own environment has a newer fastapi that its HTTP API is tested with. Each model it serves is an
.onnx file run by onnxruntime through `kserve_runtime.OnnxModel`. `stop()` kills it (SIGKILL, like a crashed
or powered-off server) and `start()` brings it back on the same ports.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers.mosquitto import free_port

ROOT = Path(__file__).resolve().parents[2]
KSERVE_PYTHON_ENV = "LINEINSPECT_KSERVE_PYTHON"


def kserve_python() -> Path:
    """The interpreter of MLServer's virtualenv (LINEINSPECT_KSERVE_PYTHON, else .venv-kserve/)."""
    return Path(os.environ.get(KSERVE_PYTHON_ENV) or ROOT / ".venv-kserve" / "bin" / "python")


class KServeServer:
    def __init__(self, models: Mapping[str, Path]) -> None:
        """models: name on the server → .onnx file it runs."""
        self.host = "127.0.0.1"
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="kserve-"))
        settings = {
            "host": self.host,
            "http_port": self.http_port,
            "grpc_port": self.grpc_port,
            "metrics_port": free_port(),
            "metrics_endpoint": None,
            "parallel_workers": 0,
            "debug": False,
            "load_models_at_startup": True,
        }
        (self.dir / "settings.json").write_text(json.dumps(settings))
        for name, onnx_path in models.items():
            folder = self.dir / name
            folder.mkdir()
            model_settings = {
                "name": name,
                "implementation": "kserve_runtime.OnnxModel",
                "parameters": {"uri": str(Path(onnx_path).resolve())},
            }
            (folder / "model-settings.json").write_text(json.dumps(model_settings))
        self.models = list(models)
        self.log = self.dir / "mlserver.log"
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, protocol: str) -> str:
        return f"{self.host}:{self.http_port if protocol == 'http' else self.grpc_port}"

    def start(self, timeout_s: float = 60.0) -> None:
        python = kserve_python()
        if not python.exists():
            pytest.skip(f"MLServer's virtualenv is missing ({python}); `make test` builds it")
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "MLSERVER_LOGGING_LEVEL": "WARNING"}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(python), "-m", "mlserver.cli.main", "start", str(self.dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.dir,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        base = f"http://{self.host}:{self.http_port}/v2"
        # The server says it is ready before a model that fails to load has failed: ask for each model.
        waiting = [f"{base}/health/ready", *(f"{base}/models/{name}/ready" for name in self.models)]
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"MLServer exited at start ({self.process.returncode}): {self.log_tail()}")
            try:
                with urllib.request.urlopen(waiting[0], timeout=0.5) as answer:
                    if answer.status == 200:
                        waiting.pop(0)
                        if not waiting:
                            return
                        continue
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        ready = waiting[0]
        self.stop()
        raise RuntimeError(f"MLServer was not ready on {ready} within {timeout_s}s: {self.log_tail()}")

    def stop(self) -> None:
        """Kill the server at once (SIGKILL to its process group), as a crash or power loss would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@contextmanager
def kserve_server(models: Mapping[str, Path], timeout_s: float = 60.0) -> Iterator[KServeServer]:
    server = KServeServer(models)
    try:
        server.start(timeout_s)
        yield server
    finally:
        server.close()
