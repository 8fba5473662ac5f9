"""``kind = "remote"``: a teacher behind a model server, over HTTP with ``httpx``.

Two REST dialects:

* ``kserve-v2`` — the Open Inference Protocol (Triton, KServe, Seldon MLServer):
  ``POST {url}/v2/models/{model}[/versions/{v}]/infer`` with typed, flattened tensors;
  ``GET {url}/v2/models/{model}`` for the metadata (input names, dtypes, shapes).
* ``tf-serving`` — TensorFlow Serving's predict API:
  ``POST {url}/v1/models/{model}[/versions/{v}]:predict`` with columnar ``inputs``.

Every request has a timeout; connection errors, timeouts, 429 and 5xx are retried
with exponential backoff, and requests are spaced to ``max_requests_per_s``. A server
that stays unreachable or slow ends the run with :class:`TeacherUnavailable` (exit 2)
naming the URL and what happened — never a traceback. The soft-target cache means a
remote teacher is asked once per (teacher, data), not once per distillation epoch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

import numpy as np

from edgerec.errors import InputError

from .contract import TeacherContract

log = logging.getLogger(__name__)

_V2_DTYPES = {"int32": "INT32", "int64": "INT64"}


class TeacherUnavailable(InputError):
    """The remote teacher did not answer (unreachable, timeout, server errors)."""


class RemoteTeacher:
    """A :class:`~.base.TeacherRuntime` that asks a model server."""

    def __init__(self, contract: TeacherContract) -> None:
        import httpx

        self.spec = contract.remote
        self.contract = contract
        self.base = self.spec.url.rstrip("/")
        self.client = httpx.Client(timeout=self.spec.timeout_s)
        self._httpx = httpx
        self._last = 0.0
        self.metadata = self._metadata()
        self._shape = self._declared_shape()

    # ------------------------------------------------------------------- http
    def _model_path(self) -> str:
        version = f"/versions/{self.spec.version}" if self.spec.version else ""
        if self.spec.protocol == "kserve-v2":
            return f"{self.base}/v2/models/{self.spec.model}{version}"
        return f"{self.base}/v1/models/{self.spec.model}{version}"

    def _throttle(self) -> None:
        if self.spec.max_requests_per_s > 0:
            wait = self._last + 1.0 / self.spec.max_requests_per_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        self._last = time.monotonic()

    def _request(self, method: str, url: str, body: Any = None) -> Any:
        httpx = self._httpx
        problem = ""
        for attempt in range(self.spec.retries + 1):
            if attempt:
                delay = self.spec.backoff_s * 2 ** (attempt - 1)
                log.warning("remote teacher: %s; retry %d in %.1f s", problem, attempt, delay)
                time.sleep(delay)
            self._throttle()
            try:
                response = self.client.request(method, url, json=body)
            except httpx.TimeoutException:
                problem = f"no answer within remote.timeout_s = {self.spec.timeout_s:g} s"
                continue
            except httpx.TransportError as exc:
                problem = f"cannot connect ({type(exc).__name__}: {exc})"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code >= 400:
                raise InputError(
                    f"remote teacher {url}: HTTP {response.status_code} "
                    f"({response.text[:300]}); check remote.model, input names and dtypes"
                )
            try:
                return response.json()
            except ValueError:
                raise InputError(f"remote teacher {url}: the answer is not JSON") from None
        raise TeacherUnavailable(
            f"remote teacher {url}: {problem} after {self.spec.retries + 1} attempt(s); "
            "is the server up and remote.url right?"
        )

    def _metadata(self) -> dict[str, Any]:
        suffix = "" if self.spec.protocol == "kserve-v2" else "/metadata"
        data = self._request("GET", self._model_path() + suffix)
        return data if isinstance(data, dict) else {}

    def _declared_shape(self) -> tuple[int | None, ...] | None:
        if self.spec.protocol != "kserve-v2":
            return None
        for item in self.metadata.get("inputs", []):
            if item.get("name") == self.contract.input.name:
                declared = item.get("datatype", "").upper()
                if declared and declared != _V2_DTYPES[self.contract.input.dtype]:
                    raise InputError(
                        f"remote teacher: input {item['name']!r} is {declared}, "
                        f"input.dtype says {self.contract.input.dtype!r}"
                    )
                return tuple(None if int(d) < 0 else int(d) for d in item.get("shape", []))
        names = [i.get("name") for i in self.metadata.get("inputs", [])]
        if names:
            raise InputError(
                f"remote teacher: the model has no input {self.contract.input.name!r} "
                f"(inputs: {names}); fix input.name"
            )
        return None

    # -------------------------------------------------------------- interface
    def input_shape(self) -> tuple[int | None, ...] | None:
        return self._shape

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if self.spec.protocol == "kserve-v2":
            return self._infer_v2(feeds)
        return self._predict_tf_serving(feeds)

    def _infer_v2(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        body: dict[str, Any] = {
            "inputs": [
                {
                    "name": name,
                    "shape": list(array.shape),
                    "datatype": _V2_DTYPES[str(array.dtype)],
                    "data": array.reshape(-1).tolist(),
                }
                for name, array in feeds.items()
            ]
        }
        if self.contract.output.name:
            body["outputs"] = [{"name": self.contract.output.name}]
        url = self._model_path() + "/infer"
        answer = self._request("POST", url, body)
        outputs = answer.get("outputs") if isinstance(answer, dict) else None
        if not outputs:
            raise InputError(f"remote teacher {url}: the answer has no 'outputs'")
        name = self.contract.output.name
        out = next((o for o in outputs if not name or o.get("name") == name), None)
        if out is None:
            got = [o.get("name") for o in outputs]
            raise InputError(f"remote teacher {url}: no output {name!r} (got {got})")
        try:
            return np.asarray(out["data"], np.float32).reshape(out["shape"])
        except (KeyError, ValueError, TypeError) as exc:
            raise InputError(f"remote teacher {url}: malformed output tensor ({exc})") from None

    def _predict_tf_serving(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        body = {
            "signature_name": self.contract.signature,
            "inputs": {name: array.tolist() for name, array in feeds.items()},
        }
        url = self._model_path() + ":predict"
        answer = self._request("POST", url, body)
        if not isinstance(answer, dict) or "outputs" not in answer:
            raise InputError(f"remote teacher {url}: the answer has no 'outputs'")
        outputs = answer["outputs"]
        if isinstance(outputs, dict):
            name = self.contract.output.name or sorted(outputs)[0]
            if name not in outputs:
                raise InputError(f"remote teacher {url}: no output {name!r} (got {list(outputs)})")
            outputs = outputs[name]
        try:
            return np.asarray(outputs, np.float32)
        except ValueError as exc:
            raise InputError(f"remote teacher {url}: malformed outputs ({exc})") from None

    def fingerprint(self) -> str:
        """The served model's identity: URL, model, version and its metadata."""
        ident = {
            "url": self.base,
            "protocol": self.spec.protocol,
            "model": self.spec.model,
            "version": self.spec.version,
            "metadata": self.metadata,
        }
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    def close(self) -> None:
        self.client.close()
