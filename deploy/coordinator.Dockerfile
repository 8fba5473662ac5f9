# syntax=docker/dockerfile:1
# The edgerec federated coordinator: edgerec[coordinator] only (no TensorFlow, no
# LiteRT). Build from the repository root:
#   docker build -f deploy/coordinator.Dockerfile -t edgerec-coordinator .
# See docs/coordinator-deployment.md.

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY edgerec ./edgerec
COPY runtime ./runtime
COPY converters ./converters
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.12-slim
COPY --from=build /wheels /wheels
# psycopg[binary] brings its own libpq: no system packages are needed
RUN pip install --no-cache-dir "$(ls /wheels/edgerec-*.whl)[coordinator]" \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --create-home --home-dir /var/lib/edgerec edgerec
USER edgerec
WORKDIR /var/lib/edgerec
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v1/status', timeout=4)"]
ENTRYPOINT ["edgerec", "coordinator"]
CMD ["serve", "--host", "0.0.0.0", "--insecure-http", "--port", "8080", "--db", "sqlite:////var/lib/edgerec/coordinator.db"]
