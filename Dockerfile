# Production image: fhir-dmp behind its own front (waitress: slow clients hold no thread, every error an
# OperationOutcome; README "The production front"). Configure with FHIR_DMP_DATABASE_URL (PostgreSQL in
# production), FHIR_DMP_JWT_PUBLIC_KEY (RS256) or FHIR_DMP_JWT_SECRET, FHIR_DMP_BASE_URL. Without a key the
# server refuses to start (exit 78).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    FHIR_DMP_DATABASE_URL=sqlite:////data/fhir-dmp.db

# The wheel ships terminologies/, profiles/, capability/ and examples/ as package data (setup.py); set
# FHIR_DMP_HOME only to serve a directory of your own instead.
WORKDIR /tmp/src
COPY setup.py setup.cfg pyproject.toml MANIFEST.in README.md ./
COPY fhir_dmp ./fhir_dmp
COPY capability ./capability
COPY terminologies ./terminologies
COPY profiles ./profiles
COPY examples ./examples
RUN pip install . && rm -rf /tmp/src

WORKDIR /app

# Never root: the server runs as fhirdmp, which owns only /data.
RUN useradd --system --home /app --shell /usr/sbin/nologin fhirdmp && mkdir -p /data && chown fhirdmp /data
USER fhirdmp
VOLUME ["/data"]
EXPOSE 8080

# Ready when the database answers (GET /readyz: 200, else 503); no curl in the slim image, so Python asks.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=4).status != 200)"]

# `serve` migrates the schema once, then serves on every interface of the container (the front is the
# waitress one: head, body and idle deadlines, request-line and header limits; see README).
CMD ["fhir-dmp", "serve", "--host", "0.0.0.0", "--port", "8080", "--workers", "2", "--threads", "4"]
