"""edgerec.coordinator: the federated-learning coordinator service (cloud side).

``edgerec coordinator serve`` runs :func:`~edgerec.coordinator.app.create_app` under
uvicorn. Install with ``pip install 'edgerec[coordinator]'`` (FastAPI, uvicorn,
httpx, cryptography, dp-accounting).

Modules:
    storage   storage interface keyed by a database URL; ``sqlite`` implements it
    security  device tokens (stored hashed), enrollment keys, rate limits
    devices   enrollment and authentication
    rounds    the round engine: phases, validation, SecAgg+ aggregation, publishing
    service   the ``Coordinator`` facade (head, status, admin)
    schemas   pydantic request models (OpenAPI)
    limits    request-body size limit (ASGI middleware)
    app       the FastAPI app
    server    uvicorn runner (TLS, single-process lock)
    cli       ``edgerec coordinator ...``

The HTTP contract it shares with devices (routes, error codes, client ids) is
:mod:`edgerec.federated.wire`. Importing this package loads nothing heavy; import the
submodules you need.
"""
