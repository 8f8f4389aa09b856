"""Bearer JWT -> `Caller` (HS256 with a shared secret in development, RS256 in production)."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from threading import Lock

import jwt

from fhir_dmp.config import project_dir
from fhir_dmp.errors import FhirError, Issue
from fhir_dmp.policy.caller import Caller
from fhir_dmp.policy.claims import ClaimShapes, InvalidClaim, load_claim_shapes

_CHALLENGE = 'Bearer realm="fhir-dmp"'


def unauthorized(diagnostics: str, error: str = "invalid_token") -> FhirError:
    header = _CHALLENGE if error == "missing" else f'{_CHALLENGE}, error="{error}"'
    return FhirError(401, [Issue("login", diagnostics)], {"WWW-Authenticate": header})


class _Verified:
    """Tokens this process verified, until they expire: a client sends the same token with every request, and
    verifying it (signature, claims, their shapes) costs more than many a request's own work. The answer for a
    token is the same in every process (no state two workers could disagree on); bounded, least recently used
    out first."""

    def __init__(self, size: int = 4096) -> None:
        self.size, self.items, self.lock = size, OrderedDict[str, tuple[Caller, float]](), Lock()

    def get(self, key: str) -> tuple[Caller, float] | None:
        with self.lock:
            found = self.items.get(key)
            if found is not None:
                self.items.move_to_end(key)
            return found

    def put(self, key: str, value: tuple[Caller, float]) -> None:
        with self.lock:
            self.items[key] = value
            if len(self.items) > self.size:
                self.items.popitem(last=False)



@dataclass(frozen=True)
class TokenKeys:
    """What a token must be to be accepted: signed with one of these keys, its claims of these shapes
    (None: the shapes of the code lists under `project_dir()`)."""

    secret: str | None
    public_key: str | None
    shapes: ClaimShapes | None = None
    # the tokens these keys verified (the cache lives and dies with the key set it speaks for)
    verified: _Verified = field(default_factory=lambda: _Verified(), compare=False, hash=False, repr=False)

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
    known = keys.verified.get(token)
    if known is not None and time.time() < known[1]:
        return known[0]
    caller, expires = _verify(token, keys)
    keys.verified.put(token, (caller, expires))
    return caller


def _verify(token: str, keys: TokenKeys) -> tuple[Caller, float]:
    """The caller a token names, and until when it is valid (its `exp`, without the clock leeway)."""
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
    return caller_from_claims(claims, keys.shapes), float(claims["exp"])


def caller_from_claims(claims: dict, shapes: ClaimShapes | None = None) -> Caller:
    """The canonical `Caller` of verified claims. A claim that is not exactly one value of its shape
    (policy/claims.py) makes the token invalid: 401, never a reading of it that some later rule would miss
    (" SM25" is not SM25 to the refused-actor rule, so it must not be a médecin either)."""
    try:
        return (shapes or load_claim_shapes(project_dir() / "terminologies")).read(claims)
    except InvalidClaim as exc:
        raise unauthorized(str(exc)) from None


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
