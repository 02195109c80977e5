"""A real KServe v2 inference server on free loopback ports, owned by the test that starts it.

Two servers, each in its own virtualenv built by `make test`:

- `mlserver` (`.venv-kserve`): MLServer, HTTP in JSON and gRPC; it pins fastapi < 0.116, and the station's own
  environment has a newer fastapi that its HTTP API is tested with. Its models run through
  `kserve_runtime.OnnxModel`.
- `kserve` (`.venv-kserve-binary`): the `kserve` package's own model server, HTTP with KServe's binary data
  extension (what a card's default `http_binary: true` sends, as to Triton or OpenVINO Model Server), through
  `kserve_binary_server.py`. It prints a line for each request that came in binary (`binary_requests()`).

Each model served is an .onnx file run by onnxruntime. `stop()` kills the server (SIGKILL, like a crashed or
powered-off server) and `start()` brings it back on the same ports.
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
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.helpers.mosquitto import free_port

ROOT = Path(__file__).resolve().parents[2]
# server → (the environment variable naming its interpreter, its virtualenv's default, what makes it)
SERVERS = {
    "mlserver": ("LINEINSPECT_KSERVE_PYTHON", ROOT / ".venv-kserve" / "bin" / "python", "MLServer"),
    "kserve": ("LINEINSPECT_KSERVE_BINARY_PYTHON", ROOT / ".venv-kserve-binary" / "bin" / "python", "kserve"),
}
BINARY_REQUEST_LINE = "lineinspect-test: binary request"  # as kserve_binary_server.py prints it
# The remote paths the tests and bench/bench_remote.py take: name → (the server that serves it, the card's
# protocol, its http_binary).
REMOTE_PATHS = {
    "http": ("mlserver", "http", False),
    "grpc": ("mlserver", "grpc", False),
    "http-binary": ("kserve", "http", True),
}


def kserve_python(server: str = "mlserver") -> Path:
    """The interpreter of the server's virtualenv (its environment variable, else the one `make test` builds)."""
    variable, default, _ = SERVERS[server]
    return Path(os.environ.get(variable) or default)


class KServeServer:
    def __init__(self, models: Mapping[str, Path], server: str = "mlserver") -> None:
        """models: name on the server → .onnx file it runs. server: `mlserver` or `kserve` (module docstring)."""
        if server not in SERVERS:
            raise ValueError(f"server {server!r}: one of {sorted(SERVERS)}")
        self.server = server
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
        self.model_files = {name: str(Path(path).resolve()) for name, path in models.items()}
        self.log = self.dir / f"{server}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, protocol: str) -> str:
        if protocol == "grpc" and self.server == "kserve":
            raise ValueError("the kserve server here serves HTTP only (gRPC is MLServer's part)")
        return f"{self.host}:{self.http_port if protocol == 'http' else self.grpc_port}"

    def binary_requests(self) -> int:
        """Requests that came in the binary data extension so far (kserve server only)."""
        return self.log_tail(chars=10**9).count(BINARY_REQUEST_LINE)

    def start(self, timeout_s: float = 60.0) -> None:
        python = kserve_python(self.server)
        name = SERVERS[self.server][2]
        if not python.exists():
            pytest.skip(f"{name}'s virtualenv is missing ({python}); `make test` builds it")
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "MLSERVER_LOGGING_LEVEL": "WARNING"}
        if self.server == "mlserver":
            command = [str(python), "-m", "mlserver.cli.main", "start", str(self.dir)]
        else:
            env["LINEINSPECT_KSERVE_CONFIG"] = json.dumps({"http_port": self.http_port, "models": self.model_files})
            command = [str(python), str(Path(__file__).with_name("kserve_binary_server.py"))]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command,
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
                raise RuntimeError(f"{name} exited at start ({self.process.returncode}): {self.log_tail()}")
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
        raise RuntimeError(f"{name} was not ready on {ready} within {timeout_s}s: {self.log_tail()}")

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
