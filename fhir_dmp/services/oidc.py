"""OpenID Connect issuers: discovery, their JWKS (PyJWT's PyJWKClient), and the verification of their tokens.

Per process and per issuer, `/.well-known/openid-configuration` is fetched once (again after a failure, no more
often than the refresh cooldown) and the JWKS is kept `lifespan` seconds; a token naming a `kid` the kept set does
not hold forces one refresh, no more often than the cooldown counted from the last such forced refresh (not, as
PyJWKClient counts, from any fetch: a key rotated just after the first fetch or a lifespan refetch is picked up at
once), so a flood of invented `kid`s costs the issuer one request per cooldown. Within that cooldown, an unknown
`kid` is a 503 with `Retry-After` (the token may be signed with a key published since), unless the token was
issued more than the leeway before the kept set was fetched (its key would be in it): a 401. Nothing here runs per
request for a token already verified: the verified token is cached by `services/identity.py` with its issuer and
`kid`, and dropped once its key leaves the JWKS.

Refused (401): a token of an issuer not configured, signed with anything but RS256, PS256 or ES256 (`none`, HS*:
the issuer's public key is no shared secret), with a `kid` not in the issuer's JWKS or a key of another type than
its `alg`, with another `aud`, or outside `exp`/`nbf`/`iat` by more than the leeway. An issuer that cannot be
reached is a 503: the token may be good, the server cannot tell now.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from threading import Lock
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhir_dmp.errors import FhirError
from fhir_dmp.policy.mappings import ClaimMapping
from fhir_dmp.services.jwks import MIN_RETRY, KeySet, Unfetchable, fetch_json

ALGORITHMS = ("RS256", "PS256", "ES256")
TYPES = ("jwt", "at+jwt")  # the `typ` of an access token (RFC 7519 5.1, RFC 9068 2.1), "application/" omitted
ID_TOKEN_CLAIMS = ("at_hash", "c_hash")
MIN_RSA_BITS = 2048  # ANSSI (RGS B1) and NIST SP 800-57: no shorter RSA key signs
DISCOVERY = "/.well-known/openid-configuration"
RETRY_AFTER = 5


class Refused(Exception):
    """A token this issuer does not vouch for (the caller answers 401 with this text)."""


def short(value: object) -> str:
    """A value of the token, as a refusal may echo it: escaped, at most 80 characters (a `kid` may be 60 kB)."""
    text = ascii(value)
    return text if len(text) <= 80 else text[:77] + "..."


def unreachable(why: str) -> FhirError:
    return FhirError.of(503, "transient", f"The token's issuer cannot be reached to check its keys: {why}",
                        headers={"Retry-After": str(RETRY_AFTER)})


def refreshing(issuer: str, kid: str, remaining: float) -> FhirError:
    """An unknown `kid` within the cooldown of the last forced refresh: the key may have been published since."""
    wait = max(1, math.ceil(remaining))
    return FhirError.of(503, "transient", f"The key set of issuer {issuer} is being refreshed: the token's key "
                        f"{short(kid)} was not in it when last fetched, and it is fetched again at most once per "
                        f"cooldown; retry in {wait} s", headers={"Retry-After": str(wait)})


@dataclass
class Issuer:
    """One configured issuer: its URL (the exact `iss`), the audience its tokens must name, its claim mapping."""

    url: str
    audience: str
    mapping: ClaimMapping
    leeway: int = 30
    lifespan: float = 300.0
    cooldown: float = 30.0
    timeout: float = 5.0
    _discovery: dict | None = field(default=None, repr=False)
    _tried: float = field(default=-1e9, repr=False)
    _jwks: jwt.PyJWKClient | None = field(default=None, repr=False)
    _lock: Lock = field(default_factory=Lock, repr=False)
    _forced: float | None = field(default=None, repr=False)  # monotonic time of the last refresh an unknown kid forced
    _refresh_lock: Lock = field(default_factory=Lock, repr=False)

    def discovery(self) -> dict:
        """The issuer's OpenID configuration, fetched once; its `issuer` must be this issuer's URL exactly, its
        `jwks_uri` http(s), and https when the issuer is (a JWKS fetched in clear could be swapped on the way).
        The JWKS may be on another host (OpenID Connect Discovery allows it, and large providers do it): whoever
        writes this document speaks for the issuer anyway."""
        with self._lock:
            if self._discovery is not None:
                return self._discovery
            if time.monotonic() - self._tried < max(self.cooldown, MIN_RETRY):
                raise unreachable(f"{self.url}{DISCOVERY} failed less than {max(self.cooldown, MIN_RETRY):g} s ago")
            self._tried = time.monotonic()
            try:
                document = fetch_json(self.url.rstrip("/") + DISCOVERY, self.timeout, redirects=True)
            except Unfetchable as exc:
                raise unreachable(str(exc)) from None
            if not isinstance(document, dict) or document.get("issuer") != self.url \
                    or not isinstance(document.get("jwks_uri"), str):
                raise unreachable(f"{self.url}{DISCOVERY} does not describe this issuer (issuer, jwks_uri)")
            scheme = urlsplit(document["jwks_uri"]).scheme.lower()
            if scheme not in ("http", "https") or (urlsplit(self.url).scheme.lower() == "https" and scheme != "https"):
                raise unreachable(f"{self.url}{DISCOVERY} names a jwks_uri that is not https like the issuer: "
                                  f"{short(document['jwks_uri'])}")
            self._discovery = document
            return document

    def jwks(self) -> jwt.PyJWKClient:
        if self._jwks is None:
            uri = self.discovery()["jwks_uri"]
            with self._lock:
                if self._jwks is None:
                    try:
                        self._jwks = KeySet(uri, lifespan=self.lifespan, cooldown=self.cooldown,
                                            timeout=self.timeout)
                    except jwt.PyJWKClientError as exc:
                        raise unreachable(f"{self.url}'s jwks_uri {short(uri)}: {exc}") from None
        return self._jwks

    def signing_key(self, kid: Any, alg: str, issued: Any = None) -> jwt.PyJWK:
        """The key of the JWKS named `kid` and fit for `alg`. Several keys may share a `kid` when their types differ
        (RFC 7517 4.5): the one of the algorithm's type is taken; two that both fit are ambiguous (refused).
        `issued`: the token's `iat`, unverified, which only chooses between a 401 and a 503 (`_refreshed`)."""
        if not isinstance(kid, str) or not kid:
            raise Refused(f"The bearer token of issuer {self.url} names no key ('kid')")
        client = self.jwks()
        try:
            named = [k for k in client.get_signing_keys() if k.key_id == kid] or self._refreshed(client, kid, issued)
        except jwt.PyJWKClientConnectionError as exc:
            raise unreachable(str(exc)) from None
        except jwt.PyJWKSetError as exc:  # e.g. {"keys": []}: the issuer's JWKS is broken, not the token
            raise unreachable(f"the JWKS of issuer {self.url} holds no usable key: {exc}") from None
        except jwt.PyJWKClientError as exc:
            raise Refused(f"The bearer token's key {short(kid)} is not in the JWKS of issuer {self.url}") from exc
        if not named:
            raise Refused(f"The bearer token's key {short(kid)} is not in the JWKS of issuer {self.url}")
        fitting = [k for k in named if _fits(k, alg)]
        if not fitting:
            raise Refused(f"The key {short(kid)} of issuer {self.url} is not a key for {alg}")
        if len(fitting) > 1:
            raise Refused(f"The JWKS of issuer {self.url} holds several {alg} keys named {short(kid)}: which one "
                          "signs is not said")
        return fitting[0]

    def _refreshed(self, client: jwt.PyJWKClient, kid: str, issued: Any) -> list[jwt.PyJWK]:
        """The keys named `kid` after one refresh of the JWKS, made when no unknown `kid` forced one within the
        cooldown (only such refreshes count: the first fetch and the lifespan's are not a token's doing). Within it,
        none (a 401) for a token issued more than the leeway before the kept set was fetched (a provider publishes
        a key before it signs with it: a withdrawn key, say), else a 503 until a refresh may be made. One request at
        a time: those waiting find the key the first one's refresh brought."""
        with self._refresh_lock:
            named = [k for k in client.get_signing_keys() if k.key_id == kid]
            if named:
                return named
            now = time.monotonic()
            if self._forced is not None and now - self._forced < self.cooldown:
                fetched = getattr(client, "_last_successful_fetch", None)  # monotonic, as PyJWKClient keeps it
                if fetched is not None and type(issued) in (int, float) \
                        and issued + self.leeway < time.time() - (now - fetched):
                    return []
                raise refreshing(self.url, kid, self.cooldown - (now - self._forced))
            self._forced = now  # a failed refresh counts too (KeySet keeps its own retry delay)
            return [k for k in client.get_signing_keys(refresh=True) if k.key_id == kid]

    def knows(self, kid: str) -> bool:
        """Whether `kid` is still in the issuer's JWKS as kept (fetched again once its lifespan is over): a token
        verified with a key the issuer has since withdrawn is no longer accepted. A JWKS that cannot be fetched
        now is a 503 (the token may be good), not a 401."""
        try:
            return any(k.key_id == kid for k in self.jwks().get_signing_keys())
        except jwt.PyJWKClientConnectionError as exc:
            raise unreachable(str(exc)) from None
        except (jwt.PyJWKClientError, jwt.PyJWKSetError):
            return False

    def verify(self, token: str, header: Mapping[str, Any]) -> tuple[dict, str]:
        """The verified claims of a token of this issuer, and the `kid` that verified it; `Refused` otherwise."""
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise Refused(f"Tokens of issuer {self.url} must be signed with {', '.join(ALGORITHMS)}, not {short(alg)}")
        kid = header.get("kid")
        try:
            issued = jwt.decode(token, options={"verify_signature": False}).get("iat")  # unverified: see _refreshed
        except jwt.InvalidTokenError:
            issued = None  # the verification below says why
        jwk = self.signing_key(kid, str(alg), issued)
        try:
            claims = jwt.decode(token, jwk.key, algorithms=[str(alg)], audience=self.audience, issuer=self.url,
                                leeway=self.leeway, options={"require": ["exp", "iat", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise Refused("The bearer token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise Refused(f"The bearer token is not valid: {exc}") from None
        _access_token(header, claims)
        return claims, str(kid)


def _access_token(header: Mapping[str, Any], claims: Mapping[str, Any]) -> None:
    """An ID token is no access token (RFC 9068 1, OpenID Connect Core 2): it carries no `scope`, so taken as one it
    would be judged by the DMP rules alone, whatever the app was granted. Refused when it says what it is: a `typ`
    header other than JWT or at+jwt, an `at_hash` or `c_hash` (ID token claims only), Keycloak's `typ` claim `ID`.
    A token carrying its scopes in `scp` (a list, some providers' form) but no `scope` is refused too: this server
    reads `scope` (RFC 9068 2.2.3), and judging the token without its scopes would widen what it allows."""
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower().removeprefix("application/") not in TYPES):
        raise Refused(f"The bearer token's typ {short(typ)} is not an access token's (JWT, at+jwt)")
    if any(name in claims for name in ID_TOKEN_CLAIMS) or str(claims.get("typ", "")).lower() == "id":
        raise Refused("The bearer token is an ID token, not an access token")
    if "scp" in claims and "scope" not in claims:
        raise Refused("The bearer token carries its scopes in 'scp', which this server does not read: an access "
                      "token's scopes are its 'scope' claim (RFC 9068), one space-separated string")


def _fits(jwk: jwt.PyJWK, alg: str) -> bool:
    """The JWK is of the token's algorithm: its declared `alg` if any, its key type (RSA of MIN_RSA_BITS at least
    for RS/PS, P-256 for ES). A short RSA key in a JWKS (a test key left there, a legacy one) can be factored, and
    then anyone signs as the issuer."""
    declared = getattr(jwk, "_jwk_data", {}).get("alg")
    if declared is not None and declared != alg:
        return False
    if alg == "ES256":
        return isinstance(jwk.key, ec.EllipticCurvePublicKey) and jwk.key.curve.name == "secp256r1"
    return isinstance(jwk.key, rsa.RSAPublicKey) and jwk.key.key_size >= MIN_RSA_BITS
