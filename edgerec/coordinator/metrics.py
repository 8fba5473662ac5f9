"""Prometheus metrics of the coordinator (``GET /metrics``, ``prometheus-client``).

Two kinds, so that what a dashboard shows is right however many processes serve:

* **Counted in this process** as requests pass through (:class:`MetricsMiddleware`):
  requests and their latency per route template and status, accepted phase
  messages per phase (``masked`` = uploads), refused requests per error code.
* **Read from the database at scrape time** (:class:`StateCollector`): the current
  round and its phase, its selected cohort and the messages it received per
  phase, rounds done and failed, enrolled devices, the head version, the
  (ε, δ) spent, and federated evaluation (a candidate pending, the latest decision
  and its test statistic). The database is the truth every process shares, so these never
  drift from it.

Each app gets its own registry (no global state: tests build many apps).

**Several processes.** ``serve --workers N`` runs N processes behind one port, and a
scrape reaches one of them. So that the counters are the whole server's, not the
answering process's, the supervisor gives its workers one ``PROMETHEUS_MULTIPROC_DIR``
(:data:`MULTIPROC_ENV`): ``prometheus-client`` then keeps every process's counter
values in files there and :meth:`Metrics.render` sums them
(``MultiProcessCollector``). Independent hosts (``--shared-db``) are scraped one by
one, as Prometheus scrapes any replicated service; their database gauges agree.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .limits import ASGIApp, Message, Receive, Scope, Send
from .storage import PHASES

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "edgerec_coordinator"
#: set (by ``serve --workers N``) before ``prometheus_client`` is imported: counters
#: live in files in this folder, shared by the workers
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: request latency buckets, seconds (group commit and unmasking reach seconds)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: HTTP path segment of each phase message -> the phase it carries
MESSAGE_ROUTES = {"advertise": "advertise", "shares": "share", "masked": "upload",
                  "unmask": "unmask"}  # fmt: skip


class StateCollector(Collector):
    """Gauges read from the coordinator's status at every scrape."""

    def __init__(self, coordinator: Any) -> None:
        self.coordinator = coordinator

    def collect(self) -> Iterator[Metric]:
        try:
            status = self.coordinator.status()
        except Exception:  # a scrape must not fail the server; the gauge goes missing
            log.exception("reading the coordinator status for /metrics failed")
            return
        rnd = status.get("round") or {}
        phase = GaugeMetricFamily(
            f"{PREFIX}_round_phase",
            "1 for the state the current (or last) round is in",
            labels=["phase"],
        )
        for name in (*PHASES, "done", "failed"):
            phase.add_metric([name], 1.0 if rnd.get("state") == name else 0.0)
        yield phase
        yield GaugeMetricFamily(
            f"{PREFIX}_round_id", "number of the current (or last) round", rnd.get("round") or 0
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_round_cohort_selected",
            "devices selected for the current (or last) round",
            float(rnd.get("selected") or 0),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_round_cohort_target",
            "expected cohort size of the current (or last) round",
            float(rnd.get("cohort_target") or 0),
        )
        received = GaugeMetricFamily(
            f"{PREFIX}_round_messages",
            "messages the current (or last) round accepted, per phase",
            labels=["phase"],
        )
        for name, count in (rnd.get("messages") or {}).items():
            received.add_metric([name], float(count))
        yield received
        rounds = GaugeMetricFamily(
            f"{PREFIX}_rounds", "rounds that ended, per outcome", labels=["outcome"]
        )
        rounds.add_metric(["done"], float(status.get("rounds_done") or 0))
        rounds.add_metric(["failed"], float(status.get("rounds_failed") or 0))
        yield rounds
        yield GaugeMetricFamily(
            f"{PREFIX}_devices_enrolled", "enrolled devices (not revoked)",
            float(status.get("devices") or 0),
        )  # fmt: skip
        yield GaugeMetricFamily(
            f"{PREFIX}_head_version", "published head version",
            float(status.get("head_version") or 0),
        )  # fmt: skip
        privacy = status.get("privacy") or {}
        yield GaugeMetricFamily(
            f"{PREFIX}_epsilon_spent",
            "differential-privacy epsilon spent by the published heads (at delta_spent)",
            float(privacy.get("epsilon") or 0.0),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_delta_spent",
            "delta of the epsilon spent (including the cohort-bound tail)",
            float(privacy.get("delta_total") or 0.0),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_dp_rounds", "rounds counted by the privacy accountant",
            float(privacy.get("rounds") or 0),
        )  # fmt: skip
        yield GaugeMetricFamily(
            f"{PREFIX}_candidate_pending", "1 while a trained head awaits its evaluation",
            1.0 if status.get("candidate") else 0.0,
        )  # fmt: skip
        last = status.get("last_evaluation") or {}
        decision = GaugeMetricFamily(
            f"{PREFIX}_last_evaluation",
            "1 for the decision of the latest federated evaluation",
            labels=["decision"],
        )
        for name in ("publish", "block", "inconclusive"):
            decision.add_metric([name], 1.0 if last.get("decision") == name else 0.0)
        yield decision
        if last.get("z") is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_last_evaluation_z",
                "test statistic of the latest federated evaluation (NDCG@10 gain / its se)",
                float(last["z"]),
            )


class Metrics:
    """The registry of one app and the counters its middleware updates."""

    def __init__(self, coordinator: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            f"{PREFIX}_requests",
            "HTTP requests answered, per route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            f"{PREFIX}_request_seconds",
            "time to answer an HTTP request, per route template",
            ["route"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.messages = Counter(
            f"{PREFIX}_messages_accepted",
            "phase messages accepted (upload = masked vectors), in this process",
            ["phase"],
            registry=self.registry,
        )
        self.rejections = Counter(
            f"{PREFIX}_rejections",
            "requests refused, per error code (unauthenticated, rate_limited, ...)",
            ["reason"],
            registry=self.registry,
        )
        for phase in MESSAGE_ROUTES.values():  # expose zeros before the first message
            self.messages.labels(phase)
        self._state = StateCollector(coordinator)
        self.registry.register(self._state)

    def rejected(self, reason: str) -> None:
        """Count one refused request (called by the app's error handlers)."""
        self.rejections.labels(reason or "unknown").inc()

    def render(self) -> bytes:
        folder = os.environ.get(MULTIPROC_ENV)
        if not folder:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()  # every worker's counters, summed from their files
        multiprocess.MultiProcessCollector(registry, path=folder)
        registry.register(self._state)
        return generate_latest(registry)


class MetricsMiddleware:
    """ASGI middleware: time every HTTP request and count it by route and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            m = self.metrics
            m.latency.labels(route).observe(time.perf_counter() - start)
            m.requests.labels(route, scope.get("method", ""), str(status)).inc()
            if status == 413 and route == "unmatched":  # the body-size limit answered
                m.rejected("too_large")
            if scope.get("method") == "POST" and status == 200 and "/devices/" in route:
                phase = MESSAGE_ROUTES.get(route.rsplit("/", 1)[-1])
                if phase:
                    m.messages.labels(phase).inc()
