"""``GET /metrics`` (Prometheus) and the JSON log format."""

from __future__ import annotations

import json
import logging

from prometheus_client.parser import text_string_to_metric_families

from edgerec.coordinator.logformat import JsonFormatter
from tests.coordinator.conftest import sync_all
from tests.coordinator.harness import bearer


def scrape(server) -> dict[tuple[str, tuple], float]:
    r = server.http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def test_metrics_follow_a_round(server, make_devices):
    devices = make_devices(4)
    sync_all(devices)
    server.open_round(cohort_target=4, min_cohort=3)
    m = scrape(server)
    assert m[("edgerec_coordinator_round_phase", (("phase", "advertise"),))] == 1.0
    assert m[("edgerec_coordinator_devices_enrolled", ())] == 4.0
    sync_all(devices)
    assert server.http.get("/v1/head", headers=bearer("nope.nope")).status_code == 401
    m = scrape(server)
    assert m[("edgerec_coordinator_round_phase", (("phase", "done"),))] == 1.0
    assert m[("edgerec_coordinator_round_cohort_selected", ())] == 4.0
    assert m[("edgerec_coordinator_round_messages", (("phase", "upload"),))] == 4.0
    assert m[("edgerec_coordinator_messages_accepted_total", (("phase", "upload"),))] == 4.0
    assert m[("edgerec_coordinator_head_version", ())] == 1.0
    assert m[("edgerec_coordinator_rejections_total", (("reason", "unauthenticated"),))] >= 1
    assert ("edgerec_coordinator_epsilon_spent", ()) in m
    route = "/v1/rounds/{round_id}/devices/{device_id}/masked"
    key = ("edgerec_coordinator_request_seconds_count", (("route", route),))
    assert m[key] == 4.0
    assert "/metrics" not in server.http.get("/openapi.json").json()["paths"]


def test_json_log_lines():
    record = logging.LogRecord("edgerec.x", logging.WARNING, "f.py", 1, "a %s", ("b",), None)
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "warning" and line["logger"] == "edgerec.x"
    assert line["message"] == "a b" and line["time"].endswith("Z")
