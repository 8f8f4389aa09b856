"""SMART on FHIR scopes (App Launch 2.0, v1 and v2 syntax): a restriction added to the DMP rules, never a widening.

A token without a `scope` claim is judged by the DMP rules alone (`Caller.scopes` is None). A token with one may do
only what both allow: `refusal` answers the scope's half, the policy's own rules the other, and the services
enforce both. So a scope can turn a request the DMP rules allow into a 403, and never the other way round.

Which level a caller kind may use is data (`data/smart-scopes.json`): a system caller its `system/` scopes, a
professional its `user/` scopes (this server gives a professional's token no patient launch context, so their
`patient/` scopes grant nothing), a patient or representative `patient/` scopes (their patient context is the INS
they act for, which the DMP rules already hold them to) and `user/` ones. A scope of another level, a malformed
one, or a v2 scope narrowed by search parameters (`?category=...`, not enforced here) grants nothing: ignoring a
scope can only refuse more, never allow more. `openid`, `launch/patient`, `offline_access` and the like are about
the sign-in, not about data: they grant nothing here either.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fhir_dmp.errors import FhirError, forbidden

DATA = Path(__file__).resolve().parent.parent / "data" / "smart-scopes.json"
ALL = "*"
_RESOURCE = re.compile(r"(patient|user|system)/(\*|[A-Z][A-Za-z]{0,63})\.([a-z*]+)(\?.*)?", re.ASCII)
_V2 = re.compile(r"c?r?u?d?s?", re.ASCII)
_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+", re.ASCII)  # RFC 6749 3.3 scope-token
MAX_SCOPE_CHARS = 8192
REACHING = ("include", "chain", "has", "conditional-reference", "attachment", "subscription")


class InvalidScope(ValueError):
    """A `scope` claim of another shape than one space-separated string of scope tokens: the token is invalid."""


@dataclass(frozen=True)
class Grant:
    """One resource scope the token carries: its level, its type (or `*`) and its permissions among c r u d s."""

    level: str
    resource_type: str
    permissions: frozenset[str]


@dataclass(frozen=True)
class Grants:
    """The resource scopes of one token, parsed once when the token is verified (the caller is cached with it)."""

    grants: tuple[Grant, ...]
    text: str = ""  # the claim as the token wrote it (traces and diagnostics)

    def allows(self, levels: Iterable[str], resource_type: str, permission: str) -> bool:
        """Whether a grant of one of `levels` gives `permission` on `resource_type` (`*` asks for a `*` grant)."""
        usable = tuple(levels)
        return any(g.level in usable and permission in g.permissions
                   and (g.resource_type == ALL or g.resource_type == resource_type) for g in self.grants)


@dataclass(frozen=True)
class Rules:
    """What each interaction and operation needs, which levels each caller kind may use (data/smart-scopes.json)."""

    v1: Mapping[str, str]
    interactions: Mapping[str, str]
    conditional: Mapping[str, str]  # interaction -> what its condition (a search of its type) needs besides
    reaching: Mapping[str, str]  # include, chain, has, conditional-reference -> what the type it reaches needs
    operations: Mapping[str, tuple[tuple[str, str], ...]]
    levels: Mapping[str, tuple[str, ...]]
    capabilities: tuple[str, ...]
    scopes_supported: tuple[str, ...]
    issuer_scopes: Mapping[str, tuple[str, ...]]  # a scope the issuer delivers -> the capabilities that need it


@cache
def rules() -> Rules:
    data = json.loads(DATA.read_text(encoding="utf-8"))
    table = Rules(
        v1=data["v1"], interactions=data["interactions"], conditional=data["conditional"], reaching=data["reaching"],
        operations={name: tuple((t, p) for t, p in needs) for name, needs in data["operations"].items()},
        levels={kind: tuple(levels) for kind, levels in data["levels"].items()},
        capabilities=tuple(data["capabilities"]), scopes_supported=tuple(data["scopes_supported"]),
        issuer_scopes={scope: tuple(needing) for scope, needing in data["issuer_scopes"].items()},
    )
    odd = [p for p in (*table.v1.values(), *table.interactions.values(), *table.conditional.values(),
                       *table.reaching.values()) if not _V2.fullmatch(p)]
    if odd or not table.interactions or not table.levels or set(table.reaching) != set(REACHING):
        raise ValueError(f"{DATA}: malformed scope rules {odd}")
    return table


def parse(claim: Any) -> Grants:
    """The `scope` claim (one string, scope tokens separated by single spaces, RFC 6749 3.3) -> its grants.
    Another shape makes the token invalid; a well-formed scope this server does not enforce grants nothing."""
    if not isinstance(claim, str) or len(claim) > MAX_SCOPE_CHARS:
        raise InvalidScope("The 'scope' claim must be one string of space-separated scopes")
    tokens = claim.split(" ") if claim else []
    if any(not _TOKEN.fullmatch(t) for t in tokens):
        raise InvalidScope("The 'scope' claim must be scopes separated by single spaces, without other characters")
    return Grants(tuple(g for t in tokens if (g := grant_of(t)) is not None), claim)


def grant_of(scope: str) -> Grant | None:
    """One resource scope (v1 `.read`/`.write`/`.*`, v2 `.cruds` in order), None for every other scope."""
    found = _RESOURCE.fullmatch(scope)
    if found is None or found.group(4) is not None:  # not a resource scope, or narrowed by search parameters
        return None
    level, rtype, perms = found.group(1), found.group(2), found.group(3)
    perms = rules().v1.get(perms, perms)
    if not perms or not _V2.fullmatch(perms):
        return None
    return Grant(level, rtype, frozenset(perms))


def needs(resource_type: str | None, interaction: str, operation: str | None = None,
          conditional: bool = False) -> tuple[tuple[str, str], ...]:
    """What a request needs, as (type, permission) pairs; `*` for every type (a system-level history or search, an
    operation answering every type of a DMP). A conditional create, update, patch or delete also searches its type
    (and a conditional create that matches answers the match, as a read). Unknown interactions need nothing here:
    the route answers them."""
    table = rules()
    if interaction == "operation":
        wanted = table.operations.get(operation or "", (("", "r"),))
        return tuple((t or resource_type or ALL, p) for t, p in wanted)
    permission = table.interactions.get(interaction)
    if permission is None:
        return ()
    extra = table.conditional.get(interaction, "") if conditional else ""
    return tuple((resource_type or ALL, p) for p in (permission, *extra))


def reaching(how: str, resource_types: Iterable[str]) -> list[tuple[str, str]]:
    """What a request needs on the other types it reaches (`how`: one of REACHING): an `_include` brings their
    resources (r); a chain, a `_has` or a transaction's conditional reference searches them (s); an attachment
    `url` naming a Binary of this server makes the write's validation read it (r); a Subscription sends the results
    of a standing search of its topic's type (s to create or change one, to replay its events, to read its status).
    Without this, `DocumentReference?patient.name=...` would tell a DocumentReference-only token who the patient
    is."""
    permission = rules().reaching[how]
    return [(t, p) for t in resource_types for p in permission]


def refusal(grants: Grants | None, actor: str, wanted: Iterable[tuple[str, str]]) -> FhirError | None:
    """403 naming the missing scope when the token's scopes do not cover `wanted`; None when they do or when the
    token has no `scope` claim at all (the DMP rules alone then decide)."""
    if grants is None:
        return None
    levels = rules().levels.get(actor, ())
    for resource_type, permission in wanted:
        if not grants.allows(levels, resource_type, permission):
            return missing(actor, levels, resource_type, permission)
    return None


def missing(actor: str, levels: tuple[str, ...], resource_type: str, permission: str) -> FhirError:
    level = levels[0] if levels else "user"
    scope = f"{level}/{resource_type}.{permission}"
    usable = ", ".join(f"{lv}/" for lv in levels) or "none"
    refused = forbidden(f"The token's scopes do not grant {scope}: this request needs it (scope levels a {actor} "
                        f"caller's token may use: {usable})")
    # RFC 6750 3.1: a token lacking a scope gets the insufficient_scope challenge naming the scope it needs
    refused.headers["WWW-Authenticate"] = f'Bearer realm="fhir-dmp", error="insufficient_scope", scope="{scope}"'
    return refused
