# Production image: fhir-dmp under gunicorn. Configure with FHIR_DMP_DATABASE_URL (PostgreSQL in
# production), FHIR_DMP_JWT_PUBLIC_KEY (RS256) or FHIR_DMP_JWT_SECRET, FHIR_DMP_BASE_URL.
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

RUN useradd --system --home /app fhirdmp && mkdir -p /data && chown fhirdmp /data
USER fhirdmp
VOLUME ["/data"]
EXPOSE 8080

# `serve` migrates the schema once, then starts gunicorn workers (the app tier keeps no state).
CMD ["fhir-dmp", "serve", "--host", "0.0.0.0", "--port", "8080", "--workers", "4"]
