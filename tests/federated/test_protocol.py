"""Round parameters and strict wire validation."""

from __future__ import annotations

import base64
import copy
import json

import numpy as np
import pytest

from edgerec.federated import protocol
from edgerec.federated.errors import ProtocolError
from edgerec.federated.protocol import (
    CIPHERTEXT_BYTES,
    Advertisement,
    EncryptedShares,
    KeysBundle,
    MaskedInput,
    PublicKeys,
    RoundParams,
    ShareDelivery,
    UnmaskRequest,
    UnmaskResponse,
)
from tests.federated.conftest import make_params

K = b"\x01" * 32


def _messages(p: RoundParams) -> list:
    ct = b"\x02" * CIPHERTEXT_BYTES
    return [
        p,
        Advertisement(p.round_id, 5, K, b"\x03" * 32, b"\x04" * 32),
        KeysBundle(p.round_id, 5, (1, 5, 9), {1: PublicKeys(K, K), 9: PublicKeys(K, K)}),
        EncryptedShares(p.round_id, 5, {1: ct, 9: ct}),
        ShareDelivery(p.round_id, 5, {1: ct}),
        MaskedInput(p.round_id, 5, np.arange(p.vector_length, dtype=np.uint32)),
        UnmaskRequest(p.round_id, (1, 5), (9,)),
        UnmaskResponse(p.round_id, 5, {1: b"\x00" * 66}, {9: b"\x01" * 66}),
    ]


def test_every_message_roundtrips_through_json(params: RoundParams) -> None:
    for msg in _messages(params):
        text = protocol.dumps(msg)
        back = protocol.loads(text, params)
        assert type(back) is type(msg)
        assert back == msg
        assert protocol.dumps(back) == text


def test_round_params_json_and_validation() -> None:
    p = make_params()
    assert RoundParams.from_json(p.to_json()) == p
    fields = {k: v for k, v in vars(p).items() if k not in ("round_id", "round_seed")}
    assert RoundParams.new("r-2", **fields).round_seed != p.round_seed
    bad = {
        "round_id": "has space",
        "min_cohort": 1,
        "threshold": 9,
        "neighbour_degree": 7,
        "clip": 0.0,
        "noise_multiplier": -1.0,
        "frac_bits": 31,
        "vector_length": 0,
        "round_seed": b"short",
        "cohort_target": True,
    }
    for fld, value in bad.items():
        with pytest.raises(ProtocolError):
            make_params(**{fld: value})
    with pytest.raises(ProtocolError, match="frac_bits"):
        make_params(cohort_target=100_000, frac_bits=24)  # ring overflow possible


def test_effective_graph() -> None:
    p = make_params(neighbour_degree=8, threshold=5)
    assert p.effective_graph(100) == (8, 5)
    assert p.effective_graph(9) == (8, 5)
    assert p.effective_graph(5) == (4, 3)  # ceil(5 * 4 / 8)
    assert p.effective_graph(2) == (1, 1)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.update(extra=1), "unknown"),
        (lambda d: d.pop("client_id"), "missing"),
        (lambda d: d.update(client_id="5"), "integer"),
        (lambda d: d.update(client_id=True), "integer"),
        (lambda d: d.update(client_id=0), "outside"),
        (lambda d: d.update(round_id="r-other"), "round"),
        (lambda d: d.update(version=2), "version"),
        (lambda d: d.update(type="shares"), "type"),
        (lambda d: d.update(c_pk="!!notbase64!!"), "base64"),
        (lambda d: d.update(c_pk=base64.b64encode(b"x" * 31).decode()), "32 bytes"),
        (lambda d: d.update(s_pk=None), "base64"),
    ],
)
def test_advertisement_strict(params: RoundParams, mutate, match: str) -> None:
    wire = Advertisement(params.round_id, 5, K, K, K).to_wire()
    mutate(wire)
    with pytest.raises(ProtocolError, match=match):
        protocol.from_wire(wire, params, expect=Advertisement)


def test_masked_input_shape_and_length(params: RoundParams) -> None:
    msg = MaskedInput(params.round_id, 5, np.zeros(params.vector_length, np.uint32))
    wire = msg.to_wire()
    short = dict(wire, length=params.vector_length - 1)
    with pytest.raises(ProtocolError, match="expects"):
        MaskedInput.from_wire(short, params)
    trunc = dict(wire, data=base64.b64encode(b"\x00" * 8).decode())
    with pytest.raises(ProtocolError, match="bytes"):
        MaskedInput.from_wire(trunc, params)
    with pytest.raises(ProtocolError):
        MaskedInput(params.round_id, 5, np.zeros(3, np.int64))


def test_maps_keys_and_lists(params: RoundParams) -> None:
    ct = base64.b64encode(b"\x00" * CIPHERTEXT_BYTES).decode()
    base = EncryptedShares(params.round_id, 5, {}).to_wire()
    for key in ("05", "-1", "x", "0"):
        with pytest.raises(ProtocolError, match="canonical"):
            EncryptedShares.from_wire(dict(base, ciphertexts={key: ct}), params)
    too_many = {str(i): ct for i in range(1, params.neighbour_degree + 2)}
    with pytest.raises(ProtocolError, match="at most"):
        EncryptedShares.from_wire(dict(base, ciphertexts=too_many), params)
    req = UnmaskRequest(params.round_id, (1, 2), (3,)).to_wire()
    with pytest.raises(ProtocolError, match="sorted"):
        UnmaskRequest.from_wire(dict(req, survivors=[2, 1]), params)
    with pytest.raises(ProtocolError, match="also listed"):
        UnmaskRequest.from_wire(dict(req, dropped=[2]), params)
    resp = UnmaskResponse(params.round_id, 5, {1: b"\x00" * 66}, {}).to_wire()
    both = copy.deepcopy(resp)
    both["s_sk_shares"] = dict(both["b_shares"])
    with pytest.raises(ProtocolError, match="both kinds"):
        UnmaskResponse.from_wire(both, params)
    kb = KeysBundle(params.round_id, 5, (5, 6), {6: PublicKeys(K, K)}).to_wire()
    with pytest.raises(ProtocolError, match="not in the roster"):
        KeysBundle.from_wire(dict(kb, roster=[6, 7]), params)


def test_loads_rejects_garbage(params: RoundParams) -> None:
    for text in ("not json", "[]", '{"type": "nope"}', json.dumps({"type": 5})):
        with pytest.raises(ProtocolError):
            protocol.loads(text, params)
