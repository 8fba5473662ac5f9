"""edgerec.coordinator: the federated-learning coordinator service (cloud side).

``edgerec coordinator serve`` runs :func:`~edgerec.coordinator.app.create_app` under
uvicorn. Install with ``pip install 'edgerec[coordinator]'`` (FastAPI, uvicorn,
httpx, cryptography, dp-accounting, prometheus-client, psycopg). Deployment
(PostgreSQL, containers, metrics): docs/coordinator-deployment.md.

Modules:
    storage   storage interface keyed by a database URL
    sqlite    the embedded default backend (``sqlite:///path``)
    postgres  the PostgreSQL backend (``postgresql://...``; psycopg 3 + a pool)
    migrations  the versioned schema both backends share (``coordinator migrate``)
    security  device tokens (stored hashed), enrollment keys, rate limits
    devices   enrollment and authentication
    rounds    the round engine (a facade over the modules below)
      round_opening, cohort_sampling    opening a round, selecting its cohort
      phase, phase_advertise, phase_share, phase_upload, phase_unmask
                                        the protocol's phases, one module each
      phase_transitions                 closing phases, failing rounds
      message_intake, group_commit      storing device messages, batched commits
      device_reads, live_rounds         downloads; the in-memory SecAgg state
      publishing, privacy_ledger        the new head; (epsilon, delta) spent
    service   the ``Coordinator`` facade (head, status, admin)
    schemas   pydantic request models (OpenAPI)
    limits    request-body size limit (ASGI middleware)
    app       the FastAPI app
    metrics   Prometheus ``/metrics`` (request counters + gauges read from the database)
    logformat JSON log lines (``serve --log-format json``)
    server    uvicorn runner (TLS, single-process lock)
    cli       ``edgerec coordinator ...``

The HTTP contract it shares with devices (routes, error codes, client ids) is
:mod:`edgerec.federated.wire`. Importing this package loads nothing heavy; import the
submodules you need.
"""
