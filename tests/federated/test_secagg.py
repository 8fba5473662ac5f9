"""SecAgg+: exact recovery under dropout, detection of tampering, phase discipline."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgerec.federated import protocol
from edgerec.federated.errors import DecryptionError, ProtocolError, SecAggError
from edgerec.federated.protocol import EncryptedShares, UnmaskRequest, UnmaskResponse
from edgerec.federated.secagg import (
    SecAggClient,
    SecAggServer,
    neighbours,
    neighbours_of,
    prg_uint32,
    suggest_graph,
)
from edgerec.simulation.secagg_round import run_secagg_round
from tests.federated.conftest import make_params, plain_sum, random_inputs


def _drop(ids: list[int], frac: float, seed: int) -> set[int]:
    rng = np.random.default_rng(seed)
    return set(rng.choice(ids, size=round(frac * len(ids)), replace=False).tolist())


# ---------------------------------------------------------------------------- graph


def test_neighbour_graph_is_regular_symmetric_and_seeded() -> None:
    ids = list(range(10, 60))
    g = neighbours(b"\x01" * 32, ids, 8)
    assert set(g) == set(ids)
    for c, nb in g.items():
        assert len(nb) == 8 and c not in nb
        assert all(c in g[v] for v in nb)
    assert g == neighbours(b"\x01" * 32, reversed(ids), 8)
    assert g != neighbours(b"\x02" * 32, ids, 8)
    small = neighbours(b"\x01" * 32, [1, 2, 3, 4], 8)
    assert small[1] == (2, 3, 4)
    for c in (10, 33, 59):
        assert neighbours_of(b"\x01" * 32, ids, 8, c) == g[c]
    assert neighbours_of(b"\x01" * 32, [1, 2, 3, 4], 8, 3) == (1, 2, 4)


def test_suggest_graph() -> None:
    k, t = suggest_graph(1000, 0.1)
    assert k % 2 == 0 and t == k // 2 + 1 and k < 60
    k2, t2 = suggest_graph(1000, 0.3, majority=False)
    assert t2 < k2 // 2 and k2 < 100
    with pytest.raises(ValueError):
        suggest_graph(20, 0.6)


def test_prg_is_deterministic_per_seed() -> None:
    a = prg_uint32(b"\x00" * 32, 1000)
    assert a.dtype == np.uint32 and a.shape == (1000,)
    assert np.array_equal(a, prg_uint32(b"\x00" * 32, 1000))
    assert not np.array_equal(a, prg_uint32(b"\x01" + b"\x00" * 31, 1000))
    assert np.array_equal(prg_uint32(b"\x07" * 32, 10), prg_uint32(b"\x07" * 32, 20)[:10])


# ---------------------------------------------------------------------------- exactness


@pytest.mark.parametrize(
    ("n", "k", "t"),
    [(12, 8, 4), (20, 20, 10), (30, 10, 4)],
    ids=["sparse-small", "complete", "sparse"],
)
def test_exact_sum_without_dropout(n: int, k: int, t: int) -> None:
    p = make_params(neighbour_degree=k, threshold=t)
    ids = list(range(1, n + 1))
    inputs = random_inputs(p, ids)
    rep = run_secagg_round(p, inputs)
    assert rep.survivors == tuple(ids)
    assert np.array_equal(rep.total, plain_sum(inputs, ids))


@pytest.mark.parametrize("when", ["after_upload", "after_share"])
@pytest.mark.parametrize(("n", "k", "t"), [(20, 20, 10), (30, 10, 4)], ids=["complete", "sparse"])
def test_exact_sum_with_30_percent_dropout(when: str, n: int, k: int, t: int) -> None:
    p = make_params(neighbour_degree=k, threshold=t)
    ids = list(range(1, n + 1))
    inputs = random_inputs(p, ids, seed=n)
    dropped = _drop(ids, 0.3, seed=1)
    kwargs = {f"drop_{when}": dropped}
    rep = run_secagg_round(p, inputs, **kwargs)
    expected_ids = ids if when == "after_upload" else [c for c in ids if c not in dropped]
    assert rep.survivors == tuple(expected_ids)
    assert np.array_equal(rep.total, plain_sum(inputs, expected_ids))


def test_exact_sum_with_dropout_in_every_phase() -> None:
    p = make_params(neighbour_degree=12, threshold=5)
    ids = list(range(101, 141))
    inputs = random_inputs(p, ids, seed=3)
    before = {101, 117}
    after_share = {103, 120, 133, 139}
    after_upload = {105, 111, 125, 130, 136}
    rep = run_secagg_round(
        p,
        inputs,
        drop_before_share=before,
        drop_after_share=after_share,
        drop_after_upload=after_upload,
    )
    survivors = [c for c in ids if c not in before | after_share]
    assert rep.survivors == tuple(survivors)
    assert np.array_equal(rep.total, plain_sum(inputs, survivors))


def test_decoded_sum_matches_float_sum() -> None:
    from edgerec.federated.fixedpoint import decode_sum

    p = make_params(noise_multiplier=0.0, vector_length=50)
    ids = list(range(1, 11))
    rng = np.random.default_rng(0)
    floats = {c: np.clip(rng.normal(0, 0.05, 50), -0.2, 0.2) for c in ids}
    from edgerec.federated.dp import privatize

    inputs = {c: privatize(floats[c], p).values for c in ids}
    rep = run_secagg_round(p, inputs, wire=False)
    got = decode_sum(rep.total, p.frac_bits)
    assert np.max(np.abs(got - sum(floats.values()))) <= 10 * 2.0 ** -(p.frac_bits + 1)


def test_masked_input_hides_the_input() -> None:
    p = make_params()
    ids = list(range(1, 8))
    inputs = {c: np.zeros(p.vector_length, np.uint32) for c in ids}
    seen: list[np.ndarray] = []

    def spy(phase, msg):
        if phase == "masked":
            seen.append(msg.y.copy())
        return msg

    run_secagg_round(p, inputs, tamper=spy)
    for y in seen:  # zero inputs come out as ~uniform uint32 noise
        assert np.count_nonzero(y) > 0.99 * y.size
        assert abs(float(y.mean()) / 2**32 - 0.5) < 0.1


# ---------------------------------------------------------------------------- failures


def test_dropout_beyond_tolerance_fails_cleanly() -> None:
    p = make_params(neighbour_degree=8, threshold=6)
    ids = list(range(1, 21))
    inputs = random_inputs(p, ids)
    with pytest.raises(SecAggError, match="lack shares"):
        run_secagg_round(p, inputs, drop_after_upload=_drop(ids, 0.5, seed=0))
    with pytest.raises(SecAggError, match="min cohort"):
        run_secagg_round(make_params(min_cohort=15), inputs, drop_after_share=set(ids[:8]))
    with pytest.raises(SecAggError, match="advertised"):
        run_secagg_round(make_params(min_cohort=25), inputs)


def _flip(ct: bytes, pos: int = 40) -> bytes:
    return ct[:pos] + bytes([ct[pos] ^ 1]) + ct[pos + 1 :]


def test_tampered_ciphertext_names_the_sender() -> None:
    p = make_params()
    ids = list(range(1, 11))

    def tamper(phase, msg):
        if phase == "shares" and msg.client_id == 4:
            receiver = sorted(msg.ciphertexts)[0]
            cts = dict(msg.ciphertexts)
            cts[receiver] = _flip(cts[receiver])
            return EncryptedShares(msg.round_id, msg.client_id, cts)
        return msg

    with pytest.raises(DecryptionError, match="from client 4 ") as err:
        run_secagg_round(p, random_inputs(p, ids), tamper=tamper)
    assert err.value.sender == 4
    assert "AES-GCM" in str(err.value)


def test_rerouted_ciphertext_fails_authentication() -> None:
    """Associated data binds the receiver: swapping two ciphertexts is detected."""
    p = make_params()
    ids = list(range(1, 11))

    def swap(phase, msg):
        if phase == "shares" and msg.client_id == 7:
            a, b = sorted(msg.ciphertexts)[:2]
            cts = dict(msg.ciphertexts)
            cts[a], cts[b] = cts[b], cts[a]
            return EncryptedShares(msg.round_id, msg.client_id, cts)
        return msg

    with pytest.raises(DecryptionError) as err:
        run_secagg_round(p, random_inputs(p, ids), tamper=swap)
    assert err.value.sender == 7


def test_lying_share_holder_is_identified_and_sum_still_exact() -> None:
    p = make_params(neighbour_degree=10, threshold=4)
    ids = list(range(1, 16))
    inputs = random_inputs(p, ids)
    liar = 3

    def lie(phase, msg):
        if phase == "unmask" and msg.client_id == liar:
            bad = {c: bytes(66) for c in msg.b_shares}
            return UnmaskResponse(msg.round_id, msg.client_id, bad, msg.s_sk_shares)
        return msg

    rep = run_secagg_round(p, inputs, tamper=lie)
    assert np.array_equal(rep.total, plain_sum(inputs, ids))


def test_audit_lists_the_lying_holder() -> None:
    p = make_params(neighbour_degree=10, threshold=4)
    ids = list(range(1, 16))
    inputs = random_inputs(p, ids)
    clients = {c: SecAggClient(c, p) for c in ids}
    server = SecAggServer(p, [c.advertise() for c in clients.values()], audit_shares=True)
    for c, cl in clients.items():
        server.add_shares(cl.share_keys(server.keys_for(c)))
    server.close_shares()
    for c, cl in clients.items():
        server.add_masked(cl.masked_input(inputs[c], server.delivery_for(c)))
    req = server.close_inputs()
    for c, cl in clients.items():
        resp = cl.unmask(req)
        if c == 9:
            resp = UnmaskResponse(resp.round_id, c, {v: bytes(66) for v in resp.b_shares}, {})
        server.add_unmask_response(resp)
    assert np.array_equal(server.result(), plain_sum(inputs, ids))
    assert set(server.misbehaving) == {9}
    assert "off the dealt polynomial" in server.misbehaving[9]


def test_dealer_with_shares_inconsistent_with_its_commitment() -> None:
    p = make_params()
    ids = list(range(1, 11))
    inputs = random_inputs(p, ids)
    clients = {c: SecAggClient(c, p) for c in ids}
    server = SecAggServer(p, [c.advertise() for c in clients.values()])
    clients[6]._b = b"\x55" * 32  # shares (and masks) no longer match the advertised commitment
    for c, cl in clients.items():
        server.add_shares(cl.share_keys(server.keys_for(c)))
    server.close_shares()
    for c, cl in clients.items():
        server.add_masked(cl.masked_input(inputs[c], server.delivery_for(c)))
    req = server.close_inputs()
    for cl in clients.values():
        server.add_unmask_response(cl.unmask(req))
    with pytest.raises(SecAggError, match="client 6") as err:
        server.result()
    assert set(err.value.culprits) == {6}
    assert server.phase == "failed"


@pytest.mark.parametrize("secret", ["b", "s_sk"])
def test_masks_inconsistent_with_advertised_keys_fail_the_range_check(secret: str) -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    p = make_params(vector_length=64)
    ids = list(range(1, 11))
    inputs = random_inputs(p, ids)
    clients = {c: SecAggClient(c, p) for c in ids}
    server = SecAggServer(p, [c.advertise() for c in clients.values()])
    for c, cl in clients.items():
        server.add_shares(cl.share_keys(server.keys_for(c)))
    server.close_shares()
    if secret == "b":  # masks with a self-mask seed other than the committed one
        clients[2]._b = b"\x11" * 32
    else:  # masks with a key other than the advertised s_pk
        clients[2]._s_sk = X25519PrivateKey.generate()
    for c, cl in clients.items():
        server.add_masked(cl.masked_input(inputs[c], server.delivery_for(c)))
    req = server.close_inputs()
    for cl in clients.values():
        server.add_unmask_response(cl.unmask(req))
    with pytest.raises(SecAggError, match="out of range"):
        server.result()


# ---------------------------------------------------------------------------- discipline


def _setup(n: int = 8):
    p = make_params()
    ids = list(range(1, n + 1))
    clients = {c: SecAggClient(c, p) for c in ids}
    server = SecAggServer(p, [c.advertise() for c in clients.values()])
    return p, ids, clients, server


def test_retries_are_idempotent_and_equivocation_refused() -> None:
    p, ids, clients, server = _setup()
    inputs = random_inputs(p, ids)
    msgs = {c: cl.share_keys(server.keys_for(c)) for c, cl in clients.items()}
    assert clients[1].share_keys(server.keys_for(1)) is msgs[1]
    for m in msgs.values():
        server.add_shares(m)
    server.add_shares(msgs[1])  # retry: fine
    other = EncryptedShares(p.round_id, 1, {v: _flip(ct) for v, ct in msgs[1].ciphertexts.items()})
    with pytest.raises(ProtocolError, match="different shares"):
        server.add_shares(other)
    server.close_shares()
    masked = {c: cl.masked_input(inputs[c], server.delivery_for(c)) for c, cl in clients.items()}
    assert clients[2].masked_input(inputs[2], server.delivery_for(2)) is masked[2]
    with pytest.raises(ProtocolError, match="different inputs"):
        clients[2].masked_input(inputs[3], server.delivery_for(2))
    for m in masked.values():
        server.add_masked(m)
    server.add_masked(masked[3])
    replay = protocol.MaskedInput(p.round_id, 3, masked[4].y)
    with pytest.raises(ProtocolError, match="different masked input"):
        server.add_masked(replay)
    req = server.close_inputs()
    resp = clients[1].unmask(req)
    assert clients[1].unmask(req) is resp
    with pytest.raises(ProtocolError, match="different unmask request"):
        clients[1].unmask(UnmaskRequest(p.round_id, req.survivors[:-1], (req.survivors[-1],)))


def test_out_of_order_and_membership_errors() -> None:
    p, ids, clients, server = _setup()
    with pytest.raises(ProtocolError, match="out of order"):
        server.close_inputs()
    with pytest.raises(ProtocolError, match="not closed"):
        server.delivery_for(1)
    with pytest.raises(ProtocolError, match="not in the roster"):
        server.keys_for(99)
    with pytest.raises(ProtocolError, match="out of order"):
        clients[1].masked_input(
            np.zeros(p.vector_length, np.uint32), protocol.ShareDelivery(p.round_id, 1, {})
        )
    msg = clients[1].share_keys(server.keys_for(1))
    wrong = EncryptedShares(p.round_id, 1, dict(list(msg.ciphertexts.items())[:-1]))
    with pytest.raises(ProtocolError, match="none for"):
        server.add_shares(wrong)
    foreign = EncryptedShares("r-other", 1, msg.ciphertexts)
    with pytest.raises(ProtocolError, match="round"):
        server.add_shares(foreign)


def test_client_validates_what_the_server_sends() -> None:
    p, ids, clients, server = _setup()
    bundle = server.keys_for(1)
    stripped = protocol.KeysBundle(
        p.round_id, 1, bundle.roster, dict(list(bundle.keys.items())[1:])
    )
    with pytest.raises(ProtocolError, match="missing the keys"):
        clients[1].share_keys(stripped)
    small = protocol.KeysBundle(p.round_id, 1, (1, 2), {2: bundle.keys[2]})
    with pytest.raises(ProtocolError, match="roster"):
        clients[1].share_keys(small)
    for c, cl in clients.items():
        server.add_shares(cl.share_keys(server.keys_for(c)))
    server.close_shares()
    inputs = random_inputs(p, ids)
    with pytest.raises(ProtocolError, match="uint32"):
        clients[1].masked_input(inputs[1].astype(np.int64), server.delivery_for(1))
    for c, cl in clients.items():
        server.add_masked(cl.masked_input(inputs[c], server.delivery_for(c)))
    req = server.close_inputs()
    with pytest.raises(SecAggError, match="min cohort"):
        clients[1].unmask(UnmaskRequest(p.round_id, (1, 2), tuple(ids[2:])))
    with pytest.raises(ProtocolError, match="not listed"):
        clients[1].unmask(UnmaskRequest(p.round_id, tuple(ids[1:]), (1,)))
    resp = clients[1].unmask(req)
    partial = UnmaskResponse(p.round_id, 1, dict(list(resp.b_shares.items())[1:]), {})
    with pytest.raises(ProtocolError, match="exactly"):
        server.add_unmask_response(partial)


def test_client_state_survives_a_restart() -> None:
    p, ids, clients, server = _setup(10)
    inputs = random_inputs(p, ids)
    for c, cl in clients.items():
        server.add_shares(cl.share_keys(server.keys_for(c)))
    server.close_shares()
    # the device process dies after phase 1; state was persisted as JSON
    clients = {
        c: SecAggClient.from_state(json.loads(json.dumps(cl.export_state())))
        for c, cl in clients.items()
    }
    for c, cl in clients.items():
        server.add_masked(cl.masked_input(inputs[c], server.delivery_for(c)))
    req = server.close_inputs()
    clients = {c: SecAggClient.from_state(cl.export_state()) for c, cl in clients.items()}
    for cl in clients.values():
        server.add_unmask_response(cl.unmask(req))
    assert np.array_equal(server.result(), plain_sum(inputs, ids))
    assert (
        clients[1].unmask(req).to_wire()
        == SecAggClient.from_state(clients[1].export_state()).unmask(req).to_wire()
    )


def test_server_rebuilt_by_replaying_messages() -> None:
    p, ids, clients, server = _setup(9)
    inputs = random_inputs(p, ids)
    log: list = [c.advertise() for c in clients.values()]
    for c, cl in clients.items():
        m = cl.share_keys(server.keys_for(c))
        server.add_shares(m)
        log.append(m)
    server.close_shares()
    for c, cl in clients.items():
        m = cl.masked_input(inputs[c], server.delivery_for(c))
        server.add_masked(m)
        log.append(m)
    req = server.close_inputs()
    responses = [cl.unmask(req) for cl in clients.values()]
    # "kill -9": rebuild from the stored JSON messages
    stored = [protocol.dumps(m) for m in log]
    fresh = SecAggServer(p, [protocol.loads(s, p) for s in stored[:9]])
    for s in stored[9:18]:
        fresh.add_shares(protocol.loads(s, p))
    fresh.close_shares()
    for s in stored[18:]:
        fresh.add_masked(protocol.loads(s, p))
    assert fresh.close_inputs() == req
    for r in responses:
        fresh.add_unmask_response(r)
    assert np.array_equal(fresh.result(), plain_sum(inputs, ids))


def test_advertisement_checks() -> None:
    p = make_params()
    a = SecAggClient(1, p).advertise()
    with pytest.raises(ProtocolError, match="twice"):
        SecAggServer(p, [a, a, SecAggClient(2, p).advertise()])
    copy = protocol.Advertisement(p.round_id, 3, a.c_pk, a.s_pk, a.b_commit)
    ads = [a, copy] + [SecAggClient(c, p).advertise() for c in range(4, 9)]
    with pytest.raises(ProtocolError, match="reused public key"):
        SecAggServer(p, ads)
