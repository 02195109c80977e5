"""KServe's own Python model server, serving ONNX files with onnxruntime: the far end of the binary HTTP tests.

MLServer (`kserve_runtime.py`) answers HTTP in JSON only; a model card's default, `http_binary: true`, sends
tensors in KServe's binary data extension, as Triton and OpenVINO Model Server take them. The `kserve`
package's server speaks that extension both ways, so this is the peer for it. It runs in its own virtualenv
(`.venv-kserve-binary`, built by `make test`), started by `kserve_server.KServeServer(..., server="kserve")`,
never imported by pytest: this module imports kserve.

Configuration comes in the environment (`LINEINSPECT_KSERVE_CONFIG`: JSON with `http_port` and `models`,
name → .onnx file), because kserve parses the command line itself when it is imported. It listens on
127.0.0.1 only (kserve itself binds every address) and serves HTTP only (gRPC is MLServer's part).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os

import numpy as np
import onnxruntime as ort
import uvicorn

_DATATYPES = {"tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(int64)": "INT64", "tensor(uint8)": "UINT8"}
BINARY_REQUEST_LINE = "lineinspect-test: binary request"
_NUMPY_DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64", np.dtype(np.int64): "INT64",
                    np.dtype(np.uint8): "UINT8"}  # fmt: skip
_uvicorn_config = uvicorn.Config.__init__


def _loopback_config(self: uvicorn.Config, *args: object, **kwargs: object) -> None:
    kwargs["host"] = "127.0.0.1"
    _uvicorn_config(self, *args, **kwargs)


uvicorn.Config.__init__ = _loopback_config

from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer  # noqa: E402


def _describe(tensors: list[ort.NodeArg]) -> list[dict[str, object]]:
    return [
        {
            "name": t.name,
            "datatype": _DATATYPES.get(t.type, t.type),
            "shape": [d if isinstance(d, int) else -1 for d in t.shape],
        }
        for t in tensors
    ]


class OnnxModel(Model):
    def __init__(self, name: str, onnx_path: str) -> None:
        super().__init__(name)
        self.onnx_path = onnx_path
        self.load()

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self.onnx_path, sess_options=options, providers=["CPUExecutionProvider"])
        self.ready = True
        return True

    def get_input_types(self) -> list[dict[str, object]]:
        return _describe(self.session.get_inputs())

    def get_output_types(self) -> list[dict[str, object]]:
        return _describe(self.session.get_outputs())

    async def predict(
        self,
        payload: InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> InferResponse:
        feeds = {i.name: i.as_numpy() for i in payload.inputs}
        # One line per request that came in the binary extension (its JSON header's length in a header of its
        # own): the tests read them to know it was used. kserve turns the bytes into numbers before this.
        if any(k.lower() == "inference-header-content-length" for k in headers or {}):
            print(f"{BINARY_REQUEST_LINE} {self.name}", flush=True)
        asked = payload.request_outputs or []
        wanted = [o.name for o in asked] or [o.name for o in self.session.get_outputs()]
        # onnxruntime releases the GIL: run it off the event loop so health checks stay answered.
        values = await asyncio.get_running_loop().run_in_executor(None, self.session.run, wanted, feeds)
        outputs = []
        for name, value in zip(wanted, values, strict=True):
            value = np.ascontiguousarray(value)
            output = InferOutput(name=name, shape=list(value.shape), datatype=_NUMPY_DATATYPES[value.dtype])
            output.set_data_from_numpy(value)
            outputs.append(output)
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )


def main() -> None:
    config = json.loads(os.environ["LINEINSPECT_KSERVE_CONFIG"])
    models = [OnnxModel(name, path) for name, path in config["models"].items()]
    server = ModelServer(http_port=int(config["http_port"]), enable_grpc=False, enable_latency_logging=False)
    for chatty in ("kserve.trace", "uvicorn.access"):  # a line per request each, on a CPU the bench measures
        logging.getLogger(chatty).setLevel(logging.WARNING)
    server.start(models)


if __name__ == "__main__":
    main()
