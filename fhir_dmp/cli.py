"""`fhir-dmp`: serve, mint development tokens, load the examples, migrate the database."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path

import click

from fhir_dmp.config import Settings
from fhir_dmp.services.admin import Database, upgrade

DEV_SECRET = "fhir-dmp-development-secret-change-me"


@click.group()
def main() -> None:
    """fhir-dmp: a FHIR R4 server for a French-style shared medical record (DMP)."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--database-url", envvar="FHIR_DMP_DATABASE_URL", default=Settings.database_url, show_default=True)
@click.option("--workers", default=2, show_default=True, type=int, help="gunicorn workers (0: Flask dev server)")
@click.option("--threads", default=4, show_default=True, type=int, help="threads per gunicorn worker")
@click.option("--dev-secret", is_flag=True, help=f"Use the development JWT secret {DEV_SECRET!r} if none is set")
def serve(host: str, port: int, database_url: str, workers: int, threads: int, dev_secret: bool) -> None:
    """Bring the schema up to date, then serve the FHIR API at http://HOST:PORT/fhir."""
    os.environ["FHIR_DMP_DATABASE_URL"] = database_url
    if dev_secret:
        os.environ.setdefault("FHIR_DMP_JWT_SECRET", DEV_SECRET)
    db = Database(database_url)
    upgrade(db)
    db.dispose()
    click.echo(f"fhir-dmp serving http://{host}:{port}/fhir on {Database(database_url).url.split('@')[-1]}",
               err=True)
    if workers <= 0:
        from fhir_dmp.http.app import create_app

        create_app().run(host=host, port=port, threaded=True)
        return
    from gunicorn.app.wsgiapp import run

    sys.argv = ["gunicorn", "--bind", f"{host}:{port}", "--workers", str(workers), "--threads", str(threads),
                "--access-logfile", "-", "fhir_dmp:create_app()"]
    run()


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
@click.option("--ttl", default=3600, show_default=True, type=int, help="seconds before it expires")
def token(ttl: int, secret: bool, **claims: str | None) -> None:
    """Mint a development bearer token (HS256 with FHIR_DMP_JWT_SECRET, or RS256 with FHIR_DMP_JWT_PRIVATE_KEY)."""
    from fhir_dmp.config import project_dir
    from fhir_dmp.policy.claims import InvalidClaim, load_claim_shapes
    from fhir_dmp.services.identity import mint_token

    private_key = os.environ.get("FHIR_DMP_JWT_PRIVATE_KEY")
    if private_key and "-----BEGIN" not in private_key:
        private_key = Path(private_key).read_text()
    body = {k: v for k, v in claims.items() if v}
    if secret:
        body["secret"] = True
    try:  # a token the server would answer 401 helps nobody: say which claim is wrong now
        load_claim_shapes(project_dir() / "terminologies").read(body)
    except InvalidClaim as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(mint_token(body, secret=os.environ.get("FHIR_DMP_JWT_SECRET", DEV_SECRET),
                          private_key=private_key, ttl_seconds=ttl))


@main.command("load-examples")
@click.option("--directory", type=click.Path(path_type=Path, exists=True, file_okay=False))
def load_examples(directory: Path | None) -> None:
    """Load examples/ (transaction Bundles and resources) through the same code path as the API."""
    from fhir_dmp.services.loading import load_directory

    settings = Settings.from_env()
    db = Database(settings.database_url)
    upgrade(db)
    for line in load_directory(db, settings, directory or settings.home / "examples"):
        click.echo(line)


@main.command()
@click.option("--database-url", envvar="FHIR_DMP_DATABASE_URL", default=Settings.database_url)
@click.option("--resource-type", help="only this type (default: every type)")
@click.option("--base-url", envvar="FHIR_DMP_BASE_URL", default="http://localhost:8080/fhir", show_default=True,
              help="the public base URL, to recognise absolute references to this server")
def reindex(database_url: str, resource_type: str | None, base_url: str) -> None:
    """Rebuild the search index of every stored resource (after an upgrade that indexes differently)."""
    from fhir_dmp.services.reindex import reindex as run_reindex

    database = Database(database_url)
    upgrade(database)
    count = 0
    for count in run_reindex(database, base_url, resource_type=resource_type):
        click.echo(f"{count} resources reindexed", err=True)
    click.echo(json.dumps({"reindexed": count}))


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--database-url", envvar="FHIR_DMP_DATABASE_URL", default=Settings.database_url)
def db_upgrade(database_url: str) -> None:
    """Apply the schema migrations (Alembic) up to the latest."""
    database = Database(database_url)
    upgrade(database)
    from fhir_dmp.services.admin import current_revision

    click.echo(json.dumps({"database": database.url.split("@")[-1], "revision": current_revision(database)}))


@main.group()
def audit() -> None:
    """The audit trail (AuditEvents, one hash chain per DMP)."""


@audit.command("verify")
@click.option("--database-url", envvar="FHIR_DMP_DATABASE_URL", default=Settings.database_url)
def audit_verify(database_url: str) -> None:
    """Recompute every chain and check it against the signed checkpoints (docs/audit.md); print one JSON line per
    chain and per checkpoint problem, exit 1 when any is broken."""
    from fhir_dmp.services.seal import verify

    settings = Settings.from_env()
    found, lines = verify(Database(database_url), _keyring(settings), settings.audit_checkpoint_dir)
    broken = 0
    for line in lines:
        broken += not line["ok"]
        click.echo(json.dumps(line))
    if found.latest is not None:
        click.echo(f"checked against checkpoint {found.latest['checkpoint']} of {found.latest['sealed_at']} "
                   f"({len(found.state)} chains sealed); events after it are checked by their hash links only",
                   err=True)
    else:
        click.echo("no checkpoint: the chains are checked by their hash links only (run `fhir-dmp audit seal`)",
                   err=True)
    if broken:
        click.echo(f"{broken} problem(s)", err=True)
        sys.exit(1)


@audit.command("seal")
@click.option("--database-url", envvar="FHIR_DMP_DATABASE_URL", default=Settings.database_url)
def audit_seal(database_url: str) -> None:
    """Check what changed since the last checkpoint, then seal every chain's head in a new checkpoint signed with
    FHIR_DMP_AUDIT_SIGNING_KEY (run it every few minutes: docs/audit.md). Exit 1, signing nothing, when the trail is
    already broken."""
    from fhir_dmp.services.seal import Refused, seal
    from fhir_dmp.services.signing import BadKey, load_signer

    settings = Settings.from_env()
    if not settings.audit_signing_key:
        raise click.UsageError("FHIR_DMP_AUDIT_SIGNING_KEY is not set (a PEM file path or the PEM itself)")
    try:
        signer = load_signer(settings.audit_signing_key)
        keys = _keyring(settings)
    except BadKey as exc:
        raise click.UsageError(str(exc)) from None
    try:
        done = seal(Database(database_url), signer, keys, settings.audit_checkpoint_dir)
    except Refused as refused:
        for line in refused.problems:
            click.echo(json.dumps(line))
        click.echo(f"not sealed: {len(refused.problems)} problem(s)", err=True)
        sys.exit(1)
    if done.body is None:
        click.echo(json.dumps({"sealed": False, "checkpoint": done.number or None, "reason": done.skipped}))
        return
    click.echo(json.dumps({"sealed": True, "checkpoint": done.number, "sealed_at": done.body["sealed_at"],
                           "key_id": done.body["key_id"], "chains_changed": len(done.body["chains"]),
                           "chains_removed": len(done.body["removed"]),
                           "sealed_chains": done.body["sealed_chains"],
                           **({"file": str(done.file)} if done.file else {})}))


@audit.command("keygen")
@click.argument("private_key", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--public-key", type=click.Path(path_type=Path, dir_okay=False),
              help="where to write the public key (default: PRIVATE_KEY.pub)")
def audit_keygen(private_key: Path, public_key: Path | None) -> None:
    """Write a new Ed25519 key pair for the checkpoints: PRIVATE_KEY (mode 0600, never overwritten) and its public
    key; print its key id."""
    from fhir_dmp.services.signing import generate

    public_key = public_key or private_key.with_name(private_key.name + ".pub")
    for path in (private_key, public_key):
        if path.exists():
            raise click.UsageError(f"{path} exists: a key is never overwritten")
    kid = generate(private_key, public_key)
    click.echo(json.dumps({"private_key": str(private_key), "public_key": str(public_key), "key_id": kid}))


def _keyring(settings: Settings) -> dict:
    from fhir_dmp.services.signing import BadKey, keyring

    try:
        return keyring(settings.audit_signing_key, settings.audit_verify_keys)
    except BadKey as exc:
        raise click.UsageError(str(exc)) from None


@main.command()
@click.option("--closed-before", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="purge the DMPs closed before this date, UTC (default: ten years before today)")
@click.option("--database-url", envvar="FHIR_DMP_DATABASE_URL", default=Settings.database_url)
@click.option("--base-url", envvar="FHIR_DMP_BASE_URL", default="http://localhost:8080/fhir", show_default=True,
              help="the public base URL, for the purge's AuditEvents")
@click.option("--dry-run", is_flag=True, help="list the DMPs that would be purged, remove nothing")
def purge(closed_before: datetime | None, database_url: str, base_url: str, dry_run: bool) -> None:
    """Remove the DMPs closed for more than ten years (dmp-reference.md 9): each with every version of its
    resources and its traces, leaving an AuditEvent of the purge; one JSON line per DMP, then the count."""
    from fhir_dmp.policy.lifecycle import ten_years_before
    from fhir_dmp.search.dates import now_utc
    from fhir_dmp.services.lifecycle import purge as run_purge
    from fhir_dmp.services.lifecycle import purge_candidates

    database = Database(database_url)
    upgrade(database)
    before = closed_before or ten_years_before(now_utc())
    if dry_run:
        for pid in purge_candidates(database, before):
            click.echo(json.dumps({"would_purge": f"Patient/{pid}"}))
        click.echo(json.dumps({"purged": 0}))
        return
    done = run_purge(database, before, base_url)
    for line in done:
        click.echo(json.dumps(line))
    click.echo(json.dumps({"purged": len(done)}))


if __name__ == "__main__":  # pragma: no cover
    main()
