"""`fhir-dmp`: serve, mint development tokens, load the examples, import NDJSON, migrate, reindex, purge, check the
set-up."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import click

from fhir_dmp.cli.common import DATABASE_URL, DEV_SECRET, EX_CONFIG, EX_UNAVAILABLE, progress  # noqa: E402,F401
from fhir_dmp.config import Settings
from fhir_dmp.services.admin import Database, upgrade
from fhir_dmp.version import __version__


@click.group()
@click.version_option(__version__, "--version", "-V", prog_name="fhir-dmp", message="%(prog)s %(version)s")
def main() -> None:
    """fhir-dmp: a FHIR R4 server for a French-style shared medical record (DMP)."""


def masked(url: str | None) -> str:
    """A URL with its password replaced by ***."""
    return re.sub(r"(?<=://)([^:/@]*):[^@/]*@", r"\1:***@", url) if url else ""


def _fail(status: int, message: str) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(status)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on (0.0.0.0: every interface)")
@click.option("--port", default=8080, show_default=True, type=int)
@DATABASE_URL
@click.option("--front", type=click.Choice(["waitress", "gunicorn", "flask"]), default="waitress", show_default=True,
              envvar="FHIR_DMP_FRONT",
              help="waitress: the production front (slow clients hold no thread, FHIR errors); gunicorn: the former "
                   "sync/gthread front, open to slow clients; flask: the development server")
@click.option("--workers", default=2, show_default=True, type=int, help="processes (0: Flask's development server)")
@click.option("--threads", default=4, show_default=True, type=int, help="application threads per process")
@click.option("--dev-secret", is_flag=True, help=f"Use the development JWT secret {DEV_SECRET!r} if none is set")
def serve(host: str, port: int, database_url: str, front: str, workers: int, threads: int, dev_secret: bool) -> None:
    """Bring the schema up to date, then serve the FHIR API at http://HOST:PORT/fhir.

    Refuses to start (exit 78) without FHIR_DMP_JWT_PUBLIC_KEY or FHIR_DMP_JWT_SECRET unless --dev-secret, and
    (exit 69) when the port is taken or the database cannot be migrated."""
    os.environ["FHIR_DMP_DATABASE_URL"] = database_url
    if dev_secret:
        os.environ.setdefault("FHIR_DMP_JWT_SECRET", DEV_SECRET)
    try:
        settings = Settings.from_env()
    except (OSError, ValueError) as exc:
        _fail(EX_CONFIG, f"the configuration cannot be read: {exc}")
    from fhir_dmp.services.identity import load_keys, token_sources

    try:
        sources = token_sources(load_keys(settings))
    except (OSError, ValueError) as exc:
        _fail(EX_CONFIG, f"the token sources cannot be read: {exc}")
    if not sources:
        _fail(EX_CONFIG, "no key to check bearer tokens with: set FHIR_DMP_OIDC_ISSUER (OpenID Connect), "
                         "FHIR_DMP_JWT_PUBLIC_KEY (RS256) or FHIR_DMP_JWT_SECRET (HS256), or pass --dev-secret for "
                         "development. Without one every request would be answered 401.")
    for source in sources:
        click.echo(f"tokens accepted from: {source}", err=True)
    if settings.jwt_secret:
        click.echo("warning: the shared secret (FHIR_DMP_JWT_SECRET) signs tokens any holder of it can mint for "
                   "anyone: for development and tests, not for production", err=True)
    from fhir_dmp.http.front import PortInUse, bind

    if workers <= 0:
        front = "flask"
    try:
        sock = bind(host, port)
    except PortInUse as exc:
        _fail(EX_UNAVAILABLE, f"{exc}: another program listens there; stop it or choose another --port")
    if front != "waitress":
        sock.close()  # gunicorn and Flask bind it themselves
    db = Database(database_url)
    try:
        upgrade(db)
    except Exception as exc:  # noqa: BLE001 - whatever the driver raises, say it in one line and stop
        sock.close()
        _fail(EX_UNAVAILABLE, f"the database {masked(db.url)} cannot be migrated: {_first_line(exc)}")
    finally:
        db.dispose()
    shape = "development server" if front == "flask" else f"{front}, {workers} x {threads} threads"
    click.echo(f"fhir-dmp {__version__} serving http://{host}:{port}/fhir ({shape}) on {masked(db.url)}", err=True)
    if front == "flask":
        from fhir_dmp.cli.worker import with_delivery
        from fhir_dmp.http.app import create_app

        with_delivery(create_app)().run(host=host, port=port, threaded=True)
        return
    if front == "gunicorn":
        from gunicorn.app.wsgiapp import run as gunicorn_run

        sys.argv = ["gunicorn", "--bind", f"{host}:{port}", "--workers", str(workers), "--threads", str(threads),
                    "--access-logfile", "-", "fhir_dmp:create_app()"]
        gunicorn_run()
        return
    from fhir_dmp.cli.worker import with_delivery
    from fhir_dmp.http.app import create_app
    from fhir_dmp.http.front import FrontLimits, run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    limits = FrontLimits(request_line=settings.max_request_line, header_fields=settings.max_header_bytes,
                         max_body=settings.max_body_bytes, header_timeout=settings.header_timeout,
                         body_timeout=settings.body_timeout, idle_timeout=settings.idle_timeout,
                         connection_limit=settings.connection_limit)
    sys.exit(run(with_delivery(create_app), sock, limits, workers=workers, threads=threads))


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


@main.command()
@click.option("--actor", required=True, type=click.Choice(
    ["professional", "patient", "representative", "system", "insurer", "employer"]))
@click.option("--sub", required=True, help="idNatPs, INS, a representative's id, or a system name")
@click.option("--profession", help="TRE_G15 code, e.g. 10 (médecin)")
@click.option("--specialty", help="TRE_R38 code, e.g. SM26 (médecine générale)")
@click.option("--organization")
@click.option("--patient", help="the INS the patient/representative acts for")
@click.option("--purpose-of-use", type=click.Choice(["TREAT", "ETREAT", "BTG"]))
@click.option("--access-reason")
@click.option("--secret", is_flag=True, help="a minor's secret connection")
@click.option("--scope", help="SMART scopes restricting the token, e.g. 'user/DocumentReference.rs' (docs/identity.md)")
@click.option("--ttl", default=3600, show_default=True, type=int, help="seconds before it expires")
def token(ttl: int, secret: bool, scope: str | None, **claims: str | None) -> None:
    """Mint a development bearer token (HS256 with FHIR_DMP_JWT_SECRET, or RS256 with FHIR_DMP_JWT_PRIVATE_KEY)."""
    from fhir_dmp.config import project_dir
    from fhir_dmp.policy.claims import InvalidClaim, load_claim_shapes
    from fhir_dmp.policy.scopes import InvalidScope
    from fhir_dmp.policy.scopes import parse as parse_scopes
    from fhir_dmp.services.identity import mint_token

    private_key = os.environ.get("FHIR_DMP_JWT_PRIVATE_KEY")
    if private_key and "-----BEGIN" not in private_key:
        private_key = Path(private_key).read_text()
    body = {k: v for k, v in claims.items() if v}
    if secret:
        body["secret"] = True
    if scope is not None:
        body["scope"] = scope
    try:  # a token the server would answer 401 helps nobody: say which claim is wrong now
        load_claim_shapes(project_dir() / "terminologies").read(body)
        if scope is not None:
            parse_scopes(scope)
    except (InvalidClaim, InvalidScope) as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(mint_token(body, secret=os.environ.get("FHIR_DMP_JWT_SECRET", DEV_SECRET),
                          private_key=private_key, ttl_seconds=ttl))


@main.command("load-examples")
@click.option("--directory", type=click.Path(path_type=Path, exists=True, file_okay=False))
@DATABASE_URL
def load_examples(directory: Path | None, database_url: str) -> None:
    """Load examples/ (transaction Bundles and resources) through the same code path as the API."""
    from fhir_dmp.services.loading import load_directory

    settings = Settings.from_env(database_url=database_url)
    db = Database(settings.database_url)
    upgrade(db)
    folder = directory or settings.home / "examples"
    with progress(len(list(folder.glob("*.json"))), "loading") as bar:
        for line in load_directory(db, settings, folder):
            click.echo(line)
            bar.update(1)


@main.command()
@DATABASE_URL
@click.option("--resource-type", help="only this type (default: every type)")
@click.option("--base-url", envvar="FHIR_DMP_BASE_URL", default="http://localhost:8080/fhir", show_default=True,
              help="the public base URL, to recognise absolute references to this server")
def reindex(database_url: str, resource_type: str | None, base_url: str) -> None:
    """Rebuild the search index of every stored resource (after an upgrade that indexes differently)."""
    from fhir_dmp.services.admin import count_current
    from fhir_dmp.services.reindex import reindex as run_reindex

    database = Database(database_url)
    upgrade(database)
    count = 0
    with progress(count_current(database, resource_type), "reindexing") as bar:
        for count in run_reindex(database, base_url, resource_type=resource_type):
            bar.update(count - bar.pos)
    click.echo(json.dumps({"reindexed": count}))


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@DATABASE_URL
def db_upgrade(database_url: str) -> None:
    """Apply the schema migrations (Alembic) up to the latest."""
    database = Database(database_url)
    upgrade(database)
    from fhir_dmp.services.admin import current_revision

    click.echo(json.dumps({"database": database.url.split("@")[-1], "revision": current_revision(database)}))


@main.command()
@click.option("--closed-before", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="purge the DMPs closed before this date, UTC (default: ten years before today)")
@DATABASE_URL
@click.option("--base-url", envvar="FHIR_DMP_BASE_URL", default="http://localhost:8080/fhir", show_default=True,
              help="the public base URL, for the purge's AuditEvents")
@click.option("--dry-run", is_flag=True, help="list the DMPs that would be purged, remove nothing")
def purge(closed_before: datetime | None, database_url: str, base_url: str, dry_run: bool) -> None:
    """Remove the DMPs closed for more than ten years (dmp-reference.md 9): each with every version of its
    resources and its traces, leaving an AuditEvent of the purge; one JSON line per DMP, then the count."""
    from fhir_dmp.policy.lifecycle import ten_years_before
    from fhir_dmp.search.dates import now_utc
    from fhir_dmp.services.lifecycle import purge_candidates, purge_one

    database = Database(database_url)
    upgrade(database)
    before = closed_before or ten_years_before(now_utc())
    if dry_run:
        for pid in purge_candidates(database, before):
            click.echo(json.dumps({"would_purge": f"Patient/{pid}"}))
        click.echo(json.dumps({"purged": 0}))
        return
    candidates = purge_candidates(database, before)
    purged = 0
    with progress(len(candidates), "purging") as bar:
        for pid in candidates:
            line = purge_one(database, pid, before, base_url)
            bar.update(1)
            if line is not None:
                purged += 1
                click.echo(json.dumps(line))
    click.echo(json.dumps({"purged": purged}))


@main.command()
@DATABASE_URL
def doctor(database_url: str) -> None:
    """Print the configuration (secrets masked), whether the database answers, its schema revision against this
    release's, and where the token key comes from; exit 1 when something would keep the server from working."""
    from fhir_dmp.services.admin import current_revision, head_revision, ping

    problems: list[str] = []
    warnings: list[str] = []
    env = os.environ

    def show(name: str, value: object) -> None:
        click.echo(f"{name:<22} {value}")

    show("fhir-dmp", __version__)
    try:
        settings = Settings.from_env(database_url=database_url)
    except (OSError, ValueError) as exc:
        problems.append(f"the configuration cannot be read: {exc}")
        settings = None
    show("home", settings.home if settings else env.get("FHIR_DMP_HOME", "(default)"))
    show("database", masked(Database(database_url).url))
    # -- the token key
    public, secret = env.get("FHIR_DMP_JWT_PUBLIC_KEY"), env.get("FHIR_DMP_JWT_SECRET")
    if public:
        where = "inline PEM" if "-----BEGIN" in public else f"file {public}"
        show("token key", f"FHIR_DMP_JWT_PUBLIC_KEY (RS256, {where})")
    if secret:
        show("token key", f"FHIR_DMP_JWT_SECRET (HS256, {len(secret.encode())} bytes, value ***)")
        if secret == DEV_SECRET:
            warnings.append("FHIR_DMP_JWT_SECRET is the development secret: not for production")
        elif len(secret.encode()) < 32:
            warnings.append("FHIR_DMP_JWT_SECRET is shorter than 32 bytes: weak for HS256")
    issuers = settings.oidc_issuers if settings else ()
    for url in issuers:
        show("token issuer", url)
    if settings and issuers:
        from fhir_dmp.services.identity import load_keys

        try:
            load_keys(settings)
        except (OSError, ValueError) as exc:
            problems.append(f"the OpenID Connect issuers' settings do not fit: {exc}")
    if not public and not secret and not issuers:
        show("token key", "none")
        problems.append("no token key or issuer: set FHIR_DMP_OIDC_ISSUER, FHIR_DMP_JWT_PUBLIC_KEY or "
                        "FHIR_DMP_JWT_SECRET (serve refuses to start)")
    if settings:
        show("base URL", settings.base_url or "(from each request)")
        show("notify URL", masked(settings.notify_url) or "(none)")
        show("max body", f"{settings.max_body_bytes} bytes")
        show("max request line", f"{settings.max_request_line} bytes")
        show("max header fields", f"{settings.max_header_bytes} bytes")
        show("timeouts", f"head {settings.header_timeout:g} s, body {settings.body_timeout:g} s, "
                         f"idle {settings.idle_timeout:g} s")
        show("connection limit", f"{settings.connection_limit} per process")
        show("page size", f"{settings.default_count} (max {settings.max_count})")
        show("enforce profiles", settings.enforce_profiles)
        show("debug SQL", settings.debug_sql)
    # -- the database
    database = Database(database_url)
    sqlite_file = database.url.split("sqlite:///", 1)[1] if database.url.startswith("sqlite:///") else None
    if sqlite_file and sqlite_file != ":memory:" and not Path(sqlite_file).exists():
        show("database answers", f"no: {sqlite_file} does not exist")
        problems.append(f"the SQLite file {sqlite_file} does not exist (fhir-dmp db upgrade or serve creates it)")
    else:
        started = time.monotonic()
        why = ping(database)
        if why is None:
            show("database answers", f"yes ({(time.monotonic() - started) * 1000:.0f} ms)")
            head = head_revision()
            try:
                current = current_revision(database)
            except Exception as exc:  # noqa: BLE001
                current, why = None, _first_line(exc)
            state = "up to date" if current == head else "behind: run fhir-dmp db upgrade (serve does it at start)"
            show("schema", f"{current or '(none)'} (this release: {head}): {state}")
            if current != head:
                problems.append(f"the schema is at {current or 'no revision'}, this release needs {head}")
        else:
            show("database answers", f"no: {why}")
            problems.append(f"the database does not answer: {why}")
    database.dispose()
    for line in warnings:
        click.echo(f"warning: {line}", err=True)
    for line in problems:
        click.echo(f"problem: {line}", err=True)
    if problems:
        sys.exit(1)
    click.echo("ok", err=True)


from fhir_dmp.cli.audit import audit  # noqa: E402

main.add_command(audit)
from fhir_dmp.cli.importing import import_command  # noqa: E402

main.add_command(import_command)
from fhir_dmp.cli.worker import worker_command  # noqa: E402

main.add_command(worker_command)
from fhir_dmp.cli.devidp import dev_idp  # noqa: E402

main.add_command(dev_idp)
