"""Remote teachers against a real HTTP model server (:mod:`.kserve`) wrapping an ONNX model."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

from edgerec.converters.teachers import load_contract, open_teacher
from edgerec.converters.teachers.remote import TeacherUnavailable
from edgerec.errors import InputError
from tests.converters.teachers.conftest import write_descriptor, write_items
from tests.converters.teachers.graphs import linear_teacher
from tests.converters.teachers.kserve import ModelServer

pytest.importorskip("onnxruntime")
pytest.importorskip("httpx")

REMOTE = """kind = "remote"

[remote]
url = "{url}"
protocol = "{protocol}"
model = "teacher"
timeout_s = {timeout}
retries = {retries}
backoff_s = 0.01
max_requests_per_s = {rate}
batch_size = 4

[input]
name = "item_seq"
max_len = 24
padding = "left"

[vocabulary]
path = "items.json"
"""

LOCAL = """kind = "onnx"
path = "m.onnx"

[input]
name = "item_seq"
max_len = 24
padding = "left"

[vocabulary]
path = "items.json"
"""


@pytest.fixture()
def model(tmp_path, walk_split):
    write_items(tmp_path, ["[PAD]", *walk_split.vocab.item_ids])
    return linear_teacher(tmp_path / "m.onnx", width=walk_split.vocab.num_items + 1)


def _remote(tmp_path, url, protocol="kserve-v2", timeout=5.0, retries=2, rate=0.0):
    text = REMOTE.format(url=url, protocol=protocol, timeout=timeout, retries=retries, rate=rate)
    return load_contract(write_descriptor(tmp_path, text, "remote.toml"))


def _rows(n: int = 10) -> np.ndarray:
    rng = np.random.default_rng(0)
    rows = np.zeros((n, 24), np.int32)
    for i in range(n):
        k = int(rng.integers(1, 20))
        rows[i, -k:] = rng.integers(1, 101, size=k)
    return rows


@pytest.mark.parametrize("protocol", ["kserve-v2", "tf-serving"])
def test_remote_scores_equal_the_local_model(tmp_path, walk_split, model, protocol):
    local = open_teacher(load_contract(write_descriptor(tmp_path, LOCAL)), walk_split.vocab)
    with ModelServer(model) as server:
        remote = open_teacher(_remote(tmp_path, server.url, protocol), walk_split.vocab)
        rows = _rows()
        np.testing.assert_allclose(remote.score(rows), local.score(rows), rtol=1e-6)
        assert len(server.infer_times) == 3  # 10 rows in batches of 4
    assert remote.fingerprint() != local.fingerprint()


def test_server_errors_are_retried_with_backoff(tmp_path, walk_split, model):
    with ModelServer(model) as server:
        remote = open_teacher(_remote(tmp_path, server.url), walk_split.vocab)
        server.fail_first = 2
        remote.score(_rows(3))
        assert len(server.infer_times) == 3  # two 503s, then the answer


def test_requests_are_spaced_by_the_rate_limit(tmp_path, walk_split, model):
    with ModelServer(model) as server:
        remote = open_teacher(_remote(tmp_path, server.url, rate=20.0), walk_split.vocab)
        before = len(server.infer_times)
        started = time.monotonic()
        remote.score(_rows(16))
        elapsed = time.monotonic() - started
        calls = len(server.infer_times) - before
    # four requests at 20/s: the limiter makes the client wait at least 3 gaps of 1/20 s.
    # (A lower bound on the client's own clock: a loaded host can only make it longer;
    # gaps measured at the server can shrink when one request is delivered late.)
    assert calls == 4 and elapsed >= 3 / 20 * 0.95


def test_unreachable_server_is_a_clear_error(tmp_path, walk_split, model):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    contract = _remote(tmp_path, f"http://127.0.0.1:{port}", retries=1)
    with pytest.raises(TeacherUnavailable, match=r"cannot connect .* after 2 attempt\(s\)"):
        open_teacher(contract, walk_split.vocab)


def test_slow_server_times_out(tmp_path, walk_split, model):
    with ModelServer(model) as server:
        remote = open_teacher(
            _remote(tmp_path, server.url, timeout=0.2, retries=1), walk_split.vocab
        )
        server.delay_s = 1.0
        with pytest.raises(TeacherUnavailable, match=r"no answer within remote.timeout_s = 0.2 s"):
            remote.score(_rows(2))


def test_unknown_model_and_wrong_input_name(tmp_path, walk_split, model):
    with ModelServer(model, model="other") as server, pytest.raises(InputError, match="HTTP 404"):
        open_teacher(_remote(tmp_path, server.url), walk_split.vocab)
    with ModelServer(model) as server:
        contract = _remote(tmp_path, server.url)
        text = (tmp_path / "remote.toml").read_text().replace('name = "item_seq"', 'name = "x"')
        contract = load_contract(write_descriptor(tmp_path, text, "remote.toml"))
        with pytest.raises(InputError, match=r"no input 'x' \(inputs: \['item_seq'\]\)"):
            open_teacher(contract, walk_split.vocab)
