"""`fhir-dmp audit`: the trail's checks, seals and keys (docs/audit.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from fhir_dmp.cli.common import DATABASE_URL
from fhir_dmp.config import Settings
from fhir_dmp.services.admin import Database


@click.group()
def audit() -> None:
    """The audit trail (AuditEvents, one hash chain per DMP)."""


@audit.command("verify")
@DATABASE_URL
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


@audit.command("index")
@DATABASE_URL
@click.option("--batch", default=2000, show_default=True, type=click.IntRange(1, 100000),
              help="traces indexed per transaction")
@click.option("--base-url", envvar="FHIR_DMP_BASE_URL", default="http://localhost:8080/fhir", show_default=True)
def audit_index(database_url: str, batch: int, base_url: str) -> None:
    """Write the search index rows of the traces still waiting for them (a search that reaches traces writes those
    it needs first: docs/audit.md); run it off-peak to keep the backlog short. Prints the count indexed."""
    from fhir_dmp.services.trace_index import drain

    done = 0
    for done in drain(Database(database_url), base_url, batch=batch):
        click.echo(f"{done} traces indexed", err=True)
    click.echo(json.dumps({"indexed": done}))


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
