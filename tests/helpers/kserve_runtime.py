"""An MLServer runtime that runs an ONNX file with onnxruntime: the far end of remote-inference tests.

Loaded by the MLServer process only (it runs in its own virtualenv, see `kserve_server.py`), never by
pytest: this module imports mlserver. The model settings' `parameters.uri` names the .onnx file; the
model's metadata (inputs, outputs, their datatypes and shapes) is read from that file at load, so the
server describes the model it really runs, as Triton does.
"""

from __future__ import annotations

import asyncio

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse, MetadataTensor, ResponseOutput

_DATATYPES = {"tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(int64)": "INT64", "tensor(uint8)": "UINT8"}


def _shape(dims: list[object]) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in dims]


class OnnxModel(MLModel):
    async def load(self) -> bool:
        uri = self.settings.parameters.uri if self.settings.parameters else None
        if not uri:
            raise ValueError(f"model {self.name}: parameters.uri (the .onnx file) is not set")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(uri, sess_options=options, providers=["CPUExecutionProvider"])
        self.inputs = [
            MetadataTensor(name=i.name, datatype=_DATATYPES.get(i.type, i.type), shape=_shape(i.shape))
            for i in self._session.get_inputs()
        ]
        self.outputs = [
            MetadataTensor(name=o.name, datatype=_DATATYPES.get(o.type, o.type), shape=_shape(o.shape))
            for o in self._session.get_outputs()
        ]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        wanted = [o.name for o in payload.outputs] if payload.outputs else [o.name for o in self._session.get_outputs()]
        # onnxruntime releases the GIL: run it off the event loop so health checks stay answered.
        values = await asyncio.get_running_loop().run_in_executor(None, self._session.run, wanted, feeds)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[_output(n, v) for n, v in zip(wanted, values, strict=True)],
        )


def _output(name: str, value: np.ndarray) -> ResponseOutput:
    output = NumpyCodec.encode_output(name, np.ascontiguousarray(value))
    output.shape = list(value.shape)  # the codec makes a 1-D tensor 2-D; answer the shape the model gave
    return output
