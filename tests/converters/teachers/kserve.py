"""A small model server for the remote-teacher tests: an ONNX model behind real HTTP.

Speaks the Open Inference Protocol (KServe v2 REST: ``GET /v2/models/{m}``,
``POST /v2/models/{m}/infer``) and TF Serving's REST predict
(``POST /v1/models/{m}:predict``), on a real socket in a background thread.
``fail_first`` answers the first N inference requests with 503 and ``delay_s`` sleeps
before each inference answer, to test retries and timeouts.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

_V2 = {"tensor(int64)": "INT64", "tensor(int32)": "INT32", "tensor(float)": "FP32"}
_NP = {"INT64": np.int64, "INT32": np.int32}


class ModelServer:
    def __init__(self, onnx_path: Path, model: str = "teacher") -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        self.model = model
        self.fail_first = 0
        self.delay_s = 0.0
        self.infer_times: list[float] = []
        self.requests = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> ModelServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def metadata(self) -> dict:
        def tensors(items):
            return [
                {
                    "name": t.name,
                    "datatype": _V2[t.type],
                    "shape": [d if isinstance(d, int) else -1 for d in t.shape],
                }
                for t in items
            ]

        return {
            "name": self.model,
            "platform": "onnxruntime_onnx",
            "inputs": tensors(self.session.get_inputs()),
            "outputs": tensors(self.session.get_outputs()),
        }

    def infer_v2(self, body: dict) -> dict:
        feeds = {
            t["name"]: np.asarray(t["data"], _NP[t["datatype"]]).reshape(t["shape"])
            for t in body["inputs"]
        }
        names = [o.name for o in self.session.get_outputs()]
        out = self.session.run(names, feeds)
        return {
            "model_name": self.model,
            "outputs": [
                {"name": n, "datatype": "FP32", "shape": list(a.shape), "data": a.ravel().tolist()}
                for n, a in zip(names, out, strict=True)
            ],
        }

    def predict_tf(self, body: dict) -> dict:
        types = {i.name: i.type for i in self.session.get_inputs()}
        feeds = {
            k: np.asarray(v, np.int64 if types[k] == "tensor(int64)" else np.int32)
            for k, v in body["inputs"].items()
        }
        out = self.session.run(None, feeds)[0]
        return {"outputs": out.tolist()}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, data: dict) -> None:
                raw = json.dumps(data).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:  # noqa: N802
                server.requests += 1
                if self.path in (
                    f"/v2/models/{server.model}",
                    f"/v1/models/{server.model}/metadata",
                ):
                    self._send(200, server.metadata())
                else:
                    self._send(404, {"error": f"unknown model path {self.path}"})

            def do_POST(self) -> None:  # noqa: N802
                server.requests += 1
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.infer_times.append(time.monotonic())
                if server.fail_first > 0:
                    server.fail_first -= 1
                    self._send(503, {"error": "warming up"})
                    return
                if server.delay_s:
                    time.sleep(server.delay_s)
                try:
                    if self.path == f"/v2/models/{server.model}/infer":
                        self._send(200, server.infer_v2(body))
                    elif self.path == f"/v1/models/{server.model}:predict":
                        self._send(200, server.predict_tf(body))
                    else:
                        self._send(404, {"error": f"unknown path {self.path}"})
                except (BrokenPipeError, ConnectionResetError):
                    pass
                except Exception as exc:  # the model's own error, as a server reports it
                    self._send(400, {"error": str(exc)})

        return Handler
