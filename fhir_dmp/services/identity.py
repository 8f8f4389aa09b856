"""Bearer JWT -> `Caller`: a token of a configured OpenID Connect issuer (services/oidc.py, its claims mapped by
policy/mappings.py), or one signed with the shared secret (HS256, development) or the configured RS256 key.

Which path a token takes is decided by its `iss`: a configured issuer's tokens are verified against that issuer's
JWKS only (never the shared secret); a token naming another issuer is refused when issuers are configured; a token
naming none is for the shared secret or the RS256 key. Every path ends in the same strict claims parser
(policy/claims.py), and the `scope` claim, if any, in policy/scopes.py."""

from __future__ import annotations

import base64
import json
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from threading import Lock
from urllib.parse import urlsplit

import jwt

from fhir_dmp.config import Settings, project_dir
from fhir_dmp.errors import FhirError, Issue
from fhir_dmp.policy import scopes
from fhir_dmp.policy.caller import Caller
from fhir_dmp.policy.claims import ClaimShapes, InvalidClaim, load_claim_shapes
from fhir_dmp.policy.mappings import DEFAULT as DEFAULT_MAPPING
from fhir_dmp.policy.mappings import load_mapping, load_registry
from fhir_dmp.services.oidc import Issuer, Refused, short

_CHALLENGE = 'Bearer realm="fhir-dmp"'
MAX_NUMERIC_DATE = 253402300799  # 9999-12-31T23:59:59Z
MAX_LEEWAY = 300  # seconds: clocks a few minutes apart, no more


def unauthorized(diagnostics: str, error: str = "invalid_token") -> FhirError:
    header = _CHALLENGE if error == "missing" else f'{_CHALLENGE}, error="{error}"'
    return FhirError(401, [Issue("login", diagnostics)], {"WWW-Authenticate": header})


class _Verified:
    """Tokens this process verified, until they expire: a client sends the same token with every request, and
    verifying it (signature, claims, their shapes) costs more than many a request's own work. The answer for a
    token is the same in every process (no state two workers could disagree on); bounded, least recently used
    out first."""

    def __init__(self, size: int = 4096) -> None:
        self.size, self.items, self.lock = size, OrderedDict[str, tuple](), Lock()

    def get(self, key: str) -> tuple | None:
        with self.lock:
            found = self.items.get(key)
            if found is not None:
                self.items.move_to_end(key)
            return found

    def put(self, key: str, value: tuple) -> None:
        """`value`: (caller, expires) or, for an issuer's token, (caller, expires, issuer, kid)."""
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
    issuers: Mapping[str, Issuer] = field(default_factory=dict, compare=False, hash=False)
    # the tokens these keys verified (the cache lives and dies with the key set it speaks for)
    verified: _Verified = field(default_factory=lambda: _Verified(), compare=False, hash=False, repr=False)

    def algorithms_and_key(self, header_alg: str) -> tuple[list[str], str]:
        if header_alg == "RS256" and self.public_key:
            return ["RS256"], self.public_key
        if header_alg == "HS256" and self.secret:
            return ["HS256"], self.secret
        raise unauthorized(f"Tokens signed with {short(header_alg)} are not accepted by this server")


def caller_from_header(authorization: str | None, keys: TokenKeys) -> Caller:
    """Verify the Authorization header; every failure is a 401 with a WWW-Authenticate challenge."""
    if not authorization:
        raise unauthorized("This request needs an 'Authorization: Bearer <token>' header", "missing")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":  # RFC 6750 3: another scheme is no bearer attempt, its challenge has no error code
        raise unauthorized("The Authorization header must be 'Bearer <token>'", "missing")
    if not token.strip():
        raise unauthorized("The Authorization header must be 'Bearer <token>'", "invalid_request")
    token = token.strip()
    known = keys.verified.get(token)
    if known is not None and time.time() < known[1] and (len(known) == 2 or known[2].knows(known[3])):
        return known[0]
    issuer, caller, expires, kid = _verify(token, keys)
    keys.verified.put(token, (caller, expires) if issuer is None else (caller, expires, issuer, kid))
    return caller


def _verify(token: str, keys: TokenKeys) -> tuple[Issuer | None, Caller, float, str]:
    """(the issuer or None, the caller a token names, until when it is valid (its `exp`, without the clock
    leeway), the `kid` that verified it)."""
    try:
        header, iss = jwt.get_unverified_header(token), _strict_claims(token).get("iss")
    except jwt.InvalidTokenError as exc:
        raise unauthorized(f"The bearer token is not valid: {exc}") from exc
    if keys.issuers and iss is not None:
        issuer = keys.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise unauthorized(f"The bearer token's issuer is not one this server trusts: {short(iss)}")
        try:
            claims, kid = issuer.verify(token, header)
            mapped = issuer.mapping.apply(claims)
        except (Refused, InvalidClaim) as exc:
            raise unauthorized(str(exc)) from None
        if "scope" in claims:
            mapped["scope"] = claims["scope"]
        return issuer, caller_from_claims(mapped, keys.shapes), float(claims["exp"]), kid
    return None, *_verify_shared(token, header, keys), ""


def _strict_claims(token: str) -> dict:
    """The token's header and claims read as strict JSON before anything else reads them: a member name given
    twice (RFC 7515 4, RFC 7519 4: reject, or read the last; a gateway or a log reading the first would then
    disagree with us on `sub` or `alg`: we reject), NaN or Infinity (not JSON), and `exp`, `iat`, `nbf` that are
    not a NumericDate (a JSON number; PyJWT also takes the string "1765000000", and 10**400 crashed it) all make
    the token invalid. Returns the unverified claims."""
    parts = token.split(".")
    if len(parts) != 3:
        raise jwt.DecodeError(f"a signed JWT has 3 parts, not {len(parts)} (an encrypted JWT is not accepted)")
    header, claims = (_json(part, what) for part, what in zip(parts[:2], ("header", "payload"), strict=True))
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise jwt.DecodeError("the header and the payload must be JSON objects")
    for name in ("exp", "iat", "nbf"):
        value = claims.get(name)
        if name in claims and (type(value) not in (int, float) or not 0 <= value <= MAX_NUMERIC_DATE):
            raise jwt.DecodeError(f"'{name}' must be a NumericDate (seconds since 1970, a JSON number up to "
                                  f"year 9999), not {short(value)}")
    return claims


def _json(segment: str, what: str) -> object:
    def unique(pairs: list[tuple[str, object]]) -> dict:
        out = dict(pairs)
        if len(out) != len(pairs):
            twice = next(n for i, (n, _) in enumerate(pairs) if any(n == m for m, _ in pairs[:i]))
            raise jwt.DecodeError(f"the {what} names the member {short(twice)} twice")
        return out

    def constant(name: str) -> object:
        raise jwt.DecodeError(f"the {what} holds {name}, which is not JSON")

    try:
        text = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)).decode("utf-8")
        return json.loads(text, object_pairs_hook=unique, parse_constant=constant)
    except jwt.DecodeError:
        raise
    except (ValueError, TypeError) as exc:  # base64, UTF-8 or JSON
        raise jwt.DecodeError(f"the {what} is not base64url-encoded JSON") from exc


def _verify_shared(token: str, header: dict, keys: TokenKeys) -> tuple[Caller, float]:
    """A token of the shared secret (HS256) or of the configured RS256 key."""
    try:
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
        caller = (shapes or load_claim_shapes(project_dir() / "terminologies")).read(claims)
        return caller if "scope" not in claims else replace(caller, scopes=scopes.parse(claims["scope"]))
    except (InvalidClaim, scopes.InvalidScope) as exc:
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


def load_keys(settings: Settings, shapes: ClaimShapes | None = None) -> TokenKeys:
    """The token sources `settings` configure: the shared secret, the RS256 key, the OpenID Connect issuers (each
    with its audience and claim mapping; a ValueError names a setting that does not fit)."""
    _check_issuers(settings)
    count = len(settings.oidc_issuers)
    mappings = {url: load_mapping(_nth(settings.oidc_claims, i, count, "FHIR_DMP_OIDC_CLAIMS", DEFAULT_MAPPING))
                for i, url in enumerate(settings.oidc_issuers)}
    registries = load_registry(settings.oidc_clients, [url for url, m in mappings.items() if m.takes_registry])
    issuers = {}
    for i, (url, mapping) in enumerate(mappings.items()):
        audience = _nth(settings.oidc_audiences, i, count, "FHIR_DMP_OIDC_AUDIENCE", None)
        issuers[url] = Issuer(url, audience, replace(mapping, registries=registries.get(url, {})),
                              settings.oidc_leeway, settings.oidc_jwks_lifespan, settings.oidc_refresh_cooldown)
    return TokenKeys(settings.jwt_secret, settings.jwt_public_key, shapes, issuers)


def _check_issuers(settings: Settings) -> None:
    """Issuers named once each, as http(s) URLs. A leeway of hours would accept tokens expired hours ago (and a
    negative one refuse good ones); a lifespan of 0 is no cache, and a NaN cooldown no rate limit at all."""
    if not settings.oidc_issuers:
        return
    if len(set(settings.oidc_issuers)) != len(settings.oidc_issuers):  # one would silently take the other's place
        raise ValueError("FHIR_DMP_OIDC_ISSUER names an issuer twice")
    odd = [url for url in settings.oidc_issuers if urlsplit(url).scheme not in ("http", "https")
           or not urlsplit(url).netloc]
    if odd:
        raise ValueError(f"FHIR_DMP_OIDC_ISSUER: an issuer is an http(s) URL, not {odd[0]!r}")
    if not 0 <= settings.oidc_leeway <= MAX_LEEWAY:
        raise ValueError(f"FHIR_DMP_OIDC_LEEWAY must be 0 to {MAX_LEEWAY} seconds, not {settings.oidc_leeway}")
    if not 0 < settings.oidc_jwks_lifespan <= 86400:  # False for NaN too
        raise ValueError(f"FHIR_DMP_OIDC_JWKS_LIFESPAN must be more than 0 and at most 86400 seconds, not "
                         f"{settings.oidc_jwks_lifespan}")
    if not 0 <= settings.oidc_refresh_cooldown <= 3600:
        raise ValueError(f"FHIR_DMP_OIDC_REFRESH_COOLDOWN must be 0 to 3600 seconds, not "
                         f"{settings.oidc_refresh_cooldown}")


def _nth(values: tuple[str, ...], i: int, count: int, name: str, default: str | None) -> str:
    """Issuer i's value of a setting: its only value, or its i-th of one per issuer."""
    if not values and default is not None:
        return default
    if len(values) == 1:
        return values[0]
    if len(values) == count:
        return values[i]
    raise ValueError(f"{name} must hold one value, or one per issuer of FHIR_DMP_OIDC_ISSUER ({count})")


def token_sources(keys: TokenKeys) -> list[str]:
    """What `serve` says at start: each source of accepted tokens."""
    out = [f"OpenID Connect issuer {i.url} (audience {i.audience}, claims {i.mapping.name})"
           for i in keys.issuers.values()]
    if keys.public_key:
        out.append("RS256 key (FHIR_DMP_JWT_PUBLIC_KEY)")
    if keys.secret:
        out.append("shared secret (FHIR_DMP_JWT_SECRET, HS256)")
    return out
