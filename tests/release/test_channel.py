"""The channel document both sides read (``edgerec.ota``): schema checks and the
rollout share."""

from __future__ import annotations

import pytest

from edgerec.errors import InputError
from edgerec.ota import Channel, Release, rollout_position

V1, V2 = Release("v1", "bundles/v1.tar"), Release("v2", "bundles/v2.tar")
DEVICES = [f"device-{i}" for i in range(20_000)]


def test_share_is_close_to_the_percent_and_grows_monotonically() -> None:
    for percent in (1, 10, 50):
        inside = sum(rollout_position(d, "v2") < percent for d in DEVICES)
        assert abs(inside / len(DEVICES) - percent / 100) < 0.01, (percent, inside)
    ten = {d for d in DEVICES if Channel("stable", V2, V1, 10).choose(d, None) == V2}
    fifty = {d for d in DEVICES if Channel("stable", V2, V1, 50).choose(d, None) == V2}
    assert ten < fifty, "raising the share only adds devices"


def test_share_depends_on_the_version() -> None:
    a = {d for d in DEVICES if rollout_position(d, "v2") < 10}
    b = {d for d in DEVICES if rollout_position(d, "v3") < 10}
    assert len(a & b) < len(a) / 2, "not always the same first 10%"


def test_choose() -> None:
    d = next(d for d in DEVICES if rollout_position(d, "v2") < 10)
    assert Channel("stable", V2, V1, 10).choose(d, None) == V2
    assert Channel("stable", V2, V1, 0).choose(d, None) == V1
    assert Channel("stable", V2, None, 0).choose(d, None) == V2, "nothing else to run"
    paused = Channel("stable", V2, V1, 100, paused=True)
    assert paused.choose(d, "v2") == V2 and paused.choose(d, "v1") == V1
    assert paused.choose(d, None) == V1 and paused.choose(d, "v0") == V1


def test_round_trip_and_malformed_documents() -> None:
    ch = Channel("beta", V2, V1, 12.5, paused=True)
    assert Channel.from_json(ch.to_json()) == ch
    good = ch.to_json()
    bad = [
        ({**good, "schema": 9}, "schema"),
        ({**good, "percent": 101}, "percent"),
        ({**good, "percent": "10"}, "percent"),
        ({**good, "paused": "no"}, "paused"),
        ({**good, "release": {"version": "v2", "target": "../../etc/passwd"}}, "target"),
        ({**good, "release": {"version": "../x", "target": "bundles/x.tar"}}, "version"),
        ({**good, "channel": 3}, "channel"),
        ([], "object"),
    ]
    for doc, field in bad:
        with pytest.raises(InputError, match=field):
            Channel.from_json(doc)
