"""`fhir-dmp dev-idp`: the local OpenID Connect provider of development and tests (fhir_dmp/http/devidp.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("dev-idp")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9090, show_default=True, type=int)
@click.option("--issuer", help="its public URL, the tokens' `iss` (default: http://HOST:PORT)")
@click.option("--audience", default="fhir-dmp", show_default=True, help="the tokens' `aud` (FHIR_DMP_OIDC_AUDIENCE)")
@click.option("--key-dir", type=click.Path(path_type=Path, file_okay=False),
              help="where its private keys are kept (keys.json), so that a restart keeps them")
@click.option("--ttl", default=3600, show_default=True, type=int, help="seconds a token lives")
def dev_idp(host: str, port: int, issuer: str | None, audience: str, key_dir: Path | None, ttl: int) -> None:
    """Serve a development OpenID Connect provider: discovery, a JWKS of two rotating keys (POST /rotate), a token
    endpoint (client credentials; authorization code with PKCE). For development and tests only."""
    from waitress import serve as waitress_serve

    from fhir_dmp.http.devidp import create_idp

    url = issuer or f"http://{host}:{port}"
    click.echo(f"fhir-dmp dev-idp (development only) at {url}, audience {audience!r}", err=True)
    sys.stderr.flush()
    waitress_serve(create_idp(url, audience, key_dir, ttl), host=host, port=port, threads=4, _quiet=True)
