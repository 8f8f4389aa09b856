"""The Flask application factory (gunicorn: `fhir_dmp:create_app()`)."""

from __future__ import annotations

import logging

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from fhir_dmp.config import Settings
from fhir_dmp.errors import FhirError
from fhir_dmp.http import health
from fhir_dmp.http.negotiate import JSON, response_format
from fhir_dmp.http.render import error_response
from fhir_dmp.http.routes import bp
from fhir_dmp.services.admin import Database, counting, watch
from fhir_dmp.services.capability import CapabilityBuilder
from fhir_dmp.services.identity import load_claim_shapes, load_keys
from fhir_dmp.services.pipeline import Pipeline
from fhir_dmp.services.smart import smart_issuer

log = logging.getLogger("fhir_dmp")


def create_app(settings: Settings | None = None, *, database: Database | None = None) -> Flask:
    settings = settings or Settings.from_env()
    db = database or Database(settings.database_url)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    keys = load_keys(settings, load_claim_shapes(settings.home / "terminologies"))
    app.extensions["fhir_dmp"] = {
        "settings": settings,
        "db": db,
        "pipeline": Pipeline.load(db, settings),
        "keys": keys,
        "capability": CapabilityBuilder(settings.home, smart_issuer(keys)),
    }
    if not settings.jwt_secret and not settings.jwt_public_key and not keys.issuers:
        log.warning("No token source (FHIR_DMP_OIDC_ISSUER, FHIR_DMP_JWT_PUBLIC_KEY, FHIR_DMP_JWT_SECRET) is set: "
                    "every request will get 401")
    app.register_blueprint(bp)
    app.register_blueprint(health.bp)
    app.register_error_handler(FhirError, _fhir_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
    if settings.debug_sql:
        _debug_sql(app, db)
    return app


def _debug_sql(app: Flask, db: Database) -> None:
    """FHIR_DMP_DEBUG_SQL: every response says how many statements and transactions its request sent."""
    watch(db.engine)

    @app.before_request
    def _start() -> None:
        g.debug_sql = counting()
        g.debug_sql_counts = g.debug_sql.__enter__()

    @app.after_request
    def _report(response: Response) -> Response:
        if "debug_sql_counts" in g:
            response.headers["X-Debug-SQL"] = g.debug_sql_counts.header()
        return response

    @app.teardown_request
    def _stop(_error: BaseException | None) -> None:
        if "debug_sql" in g:
            g.pop("debug_sql").__exit__(None, None, None)


def _format() -> str:
    try:
        return response_format(request.args.get("_format"), request.headers.get("Accept"))
    except FhirError:
        return JSON


def _fhir_error(error: FhirError):  # type: ignore[no-untyped-def]
    return error_response(error, _format())


def _http_error(error: HTTPException):  # type: ignore[no-untyped-def]
    if isinstance(error, RequestEntityTooLarge):
        fhir = FhirError.of(413, "too-costly", "The request body is larger than this server accepts "
                            f"({request.max_content_length} bytes)")
    else:
        code = {404: "not-found", 405: "not-supported"}.get(error.code or 500, "invalid")
        fhir = FhirError.of(error.code or 500, code, error.description or error.name)
    return error_response(fhir, _format())


def _unexpected(error: Exception):  # type: ignore[no-untyped-def]
    log.exception("Unexpected error on %s %s", request.method, request.path)
    return error_response(FhirError.of(500, "exception", "Internal server error"), _format())
