"""edgerec.coordinator: the federated-learning coordinator service (cloud side).

``edgerec coordinator serve`` runs :func:`~edgerec.coordinator.app.create_app` under
uvicorn. Install with ``pip install 'edgerec[coordinator]'`` (FastAPI, uvicorn,
httpx, cryptography, dp-accounting, prometheus-client, psycopg). Deployment
(PostgreSQL, containers, metrics): docs/coordinator-deployment.md.

Modules:
    wire      HTTP routes, error codes, client ids (stdlib only; the device imports it)
    storage   storage interface keyed by a database URL
    sqlite    the embedded default backend (``sqlite:///path``)
    postgres  the PostgreSQL backend (``postgresql://...``; psycopg 3 + a pool)
    migrations  the versioned schema both backends share (``coordinator migrate``)
    security  device tokens (stored hashed), enrollment keys, rate limits
    devices   enrollment and authentication
    rounds    the round engine: phases, validation, SecAgg+ aggregation, publishing
    service   the ``Coordinator`` facade (head, status, admin)
    schemas   pydantic request models (OpenAPI)
    limits    request-body size limit (ASGI middleware)
    app       the FastAPI app
    metrics   Prometheus ``/metrics`` (request counters + gauges read from the database)
    logformat JSON log lines (``serve --log-format json``)
    server    uvicorn runner (TLS, single-process lock)
    cli       ``edgerec coordinator ...``

Importing this package loads nothing heavy; import the submodules you need.
"""
