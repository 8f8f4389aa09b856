"""Bearer JWT -> `Caller` (HS256 with a shared secret in development, RS256 in production)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from fhir_dmp.errors import FhirError, Issue
from fhir_dmp.policy.caller import Caller

_CHALLENGE = 'Bearer realm="fhir-dmp"'


def unauthorized(diagnostics: str, error: str = "invalid_token") -> FhirError:
    header = _CHALLENGE if error == "missing" else f'{_CHALLENGE}, error="{error}"'
    return FhirError(401, [Issue("login", diagnostics)], {"WWW-Authenticate": header})


@dataclass(frozen=True)
class TokenKeys:
    secret: str | None
    public_key: str | None

    def algorithms_and_key(self, header_alg: str) -> tuple[list[str], str]:
        if header_alg == "RS256" and self.public_key:
            return ["RS256"], self.public_key
        if header_alg == "HS256" and self.secret:
            return ["HS256"], self.secret
        raise unauthorized(f"Tokens signed with {header_alg!r} are not accepted by this server")


def caller_from_header(authorization: str | None, keys: TokenKeys) -> Caller:
    """Verify the Authorization header; every failure is a 401 with a WWW-Authenticate challenge."""
    if not authorization:
        raise unauthorized("This request needs an 'Authorization: Bearer <token>' header", "missing")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("The Authorization header must be 'Bearer <token>'", "invalid_request")
    token = token.strip()
    try:
        header = jwt.get_unverified_header(token)
        algorithms, key = keys.algorithms_and_key(str(header.get("alg")))
        claims = jwt.decode(token, key, algorithms=algorithms, options={"require": ["exp", "sub"]},
                            leeway=30)
    except FhirError:
        raise
    except jwt.ExpiredSignatureError as exc:
        raise unauthorized("The bearer token has expired") from exc
    except jwt.InvalidTokenError as exc:
        raise unauthorized(f"The bearer token is not valid: {exc}") from exc
    return caller_from_claims(claims)


def caller_from_claims(claims: dict) -> Caller:
    actor = claims.get("actor")
    if not isinstance(actor, str) or not actor:
        raise unauthorized("The bearer token has no 'actor' claim")
    purpose = str(claims.get("purpose_of_use") or "TREAT")  # checked after the refused-actor rule
    secret = claims.get("secret", False)
    return Caller(
        actor=actor,
        sub=str(claims["sub"]),
        profession=_opt(claims, "profession"),
        specialty=_opt(claims, "specialty"),
        organization=_opt(claims, "organization"),
        patient=_opt(claims, "patient"),
        purpose_of_use=purpose,
        access_reason=_opt(claims, "access_reason"),
        secret=secret is True or secret == "true",
    )


def _opt(claims: dict, name: str) -> str | None:
    value = claims.get(name)
    return None if value in (None, "") else str(value)


def mint_token(claims: dict, *, secret: str | None = None, private_key: str | None = None,
               ttl_seconds: int = 3600) -> str:
    """A development token (the `fhir-dmp token` command and the tests)."""
    now = int(time.time())
    body = {"iat": now, "exp": now + ttl_seconds, **{k: v for k, v in claims.items() if v not in (None, "")}}
    if private_key:
        return jwt.encode(body, private_key, algorithm="RS256")
    if not secret:
        raise ValueError("a secret (HS256) or a private key (RS256) is needed to sign a token")
    return jwt.encode(body, secret, algorithm="HS256")
