"""Claim mappings: an OpenID Connect issuer's claims -> the contract's flat claims (dmp-reference.md 2), as data.

A mapping (`data/claims-<name>.json`) is a list of rules; the one whose `match` holds maps the token, and a token no
rule matches, or several (a professional's claims with a patient's INS: which caller is it?), is invalid (401). A
rule sets constant claims (`actor`) and reads each other claim from a path in the issuer's claims. The mapping only
moves values: it never trims, case-folds, or picks the first of several. The flat claims it produces then go through
the same strict parser as a shared-secret token's (`claims.ClaimShapes`), so an issuer's token can never reach a
reading of its claims that an HS256 token could not.

A path is a list of object keys and `*`, "the one element of this list": a list of another length (none, or
several: which applies is not said) refuses the token, unless the claim says `"ambiguous": "absent"` (an optional
claim such as the organisation, which a professional practising in several places does not name in one token).
`"empty": "absent"` reads "" as absent (Pro Santé Connect writes an unknown value as ""). `values` maps the
issuer's exact codes to the contract's (a code not in it refuses the token; null: absent). `registry` looks the
value up in a table of the deployment (the registered system clients): a value not in it refuses the token.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_dmp.policy.claims import InvalidClaim

DATA = Path(__file__).resolve().parent.parent / "data"
DEFAULT = "dmp"
_ABSENT = object()


@dataclass(frozen=True)
class Source:
    path: tuple[str, ...]
    empty: str = "refuse"  # or "absent"
    ambiguous: str = "refuse"  # or "absent"
    values: Mapping[str, Any] | None = None
    registry: str = ""


@dataclass(frozen=True)
class Rule:
    name: str
    present: tuple[str, ...]  # claims the token must carry
    absent: tuple[str, ...]  # claims it must not carry
    same: tuple[str, ...]  # claims that must all be present and equal (sub == client_id: no resource owner)
    constants: Mapping[str, Any]
    claims: Mapping[str, Source]

    def matches(self, claims: Mapping[str, Any]) -> bool:
        if any(n not in claims for n in (*self.present, *self.same)) or any(n in claims for n in self.absent):
            return False
        return len({json.dumps(claims[n], sort_keys=True) for n in self.same}) <= 1


@dataclass(frozen=True)
class ClaimMapping:
    """One or several mappings' rules, in order, with the deployment's registries (`clients`)."""

    name: str
    rules: tuple[Rule, ...]
    registries: Mapping[str, Mapping[str, str]]

    @property
    def takes_registry(self) -> bool:
        """Whether a rule reads a registry (the registered system clients)."""
        return any(source.registry for rule in self.rules for source in rule.claims.values())

    def apply(self, claims: Mapping[str, Any]) -> dict[str, Any]:
        """The contract's flat claims of a verified token, or `InvalidClaim` (the token is invalid: 401)."""
        matching = [r for r in self.rules if r.matches(claims)]
        if not matching:
            raise InvalidClaim(f"The bearer token matches no rule of the '{self.name}' claim mapping")
        if len(matching) > 1:  # e.g. a professional's claims and a patient's INS: which caller is it?
            raise InvalidClaim(f"The bearer token matches several rules of the '{self.name}' claim mapping "
                               f"({', '.join(r.name for r in matching)}): what kind of caller it is is not said")
        rule = matching[0]
        out: dict[str, Any] = dict(rule.constants)
        for target, source in rule.claims.items():
            value = self._read(claims, target, source)
            if value is not _ABSENT:
                out[target] = value
        return out

    def _read(self, claims: Mapping[str, Any], target: str, source: Source) -> Any:
        where = ".".join(source.path)
        node: Any = claims
        for step in source.path:
            if step == "*":
                if not isinstance(node, list):
                    raise InvalidClaim(f"The token's '{where}' (for '{target}') must be a list")
                if len(node) != 1:
                    if source.ambiguous == "absent":
                        return _ABSENT
                    raise InvalidClaim(f"The token's '{where}' (for '{target}') has {len(node)} values, not one")
                node = node[0]
            elif isinstance(node, dict):
                if step not in node:
                    return _ABSENT
                node = node[step]
            else:
                raise InvalidClaim(f"The token's '{where}' (for '{target}') is not of the issuer's shape")
        if node == "" and source.empty == "absent":
            return _ABSENT
        if source.values is not None:
            if not isinstance(node, str) or node not in source.values:
                raise InvalidClaim(f"The token's '{where}' (for '{target}') has a value this mapping does not know")
            node = source.values[node]
            return _ABSENT if node is None else node
        if source.registry:
            table = self.registries.get(source.registry, {})
            if not isinstance(node, str) or node not in table:
                raise InvalidClaim(f"The token's '{where}' is not a registered {source.registry[:-1]} of this server")
            return table[node]
        return node


def load_mapping(names: str, registries: Mapping[str, Mapping[str, str]] | None = None) -> ClaimMapping:
    """The mapping `names` (`psc`, or several joined by `+`: `psc+patient+system`, rules tried in that order)."""
    rules: list[Rule] = []
    for name in (names or DEFAULT).split("+"):
        path = DATA / f"claims-{name}.json"
        if not name.isidentifier() or not path.is_file():
            known = sorted(p.stem.removeprefix("claims-") for p in DATA.glob("claims-*.json"))
            raise ValueError(f"unknown claim mapping {name!r} (known: {', '.join(known)})")
        rules += [_rule(f"{name}/{i}", r) for i, r in enumerate(json.loads(path.read_text("utf-8"))["rules"])]
    return ClaimMapping(names or DEFAULT, tuple(rules), dict(registries or {}))


def _rule(name: str, data: Mapping[str, Any]) -> Rule:
    match = data.get("match", {})
    claims = {}
    for target, spec in data.get("claims", {}).items():
        source = Source(tuple(spec["path"]), spec.get("empty", "refuse"), spec.get("ambiguous", "refuse"),
                        spec.get("values"), spec.get("registry", ""))
        if not source.path or source.empty not in ("refuse", "absent") or source.ambiguous not in ("refuse", "absent"):
            raise ValueError(f"claim mapping {name}: malformed source for {target!r}")
        claims[target] = source
    return Rule(name, tuple(match.get("present", ())), tuple(match.get("absent", ())), tuple(match.get("same", ())),
                dict(data.get("constants", {})), claims)


def load_registry(path: Path | None, takers: Sequence[str]) -> dict[str, dict[str, dict[str, str]]]:
    """The system clients each issuer may vouch for (`FHIR_DMP_OIDC_CLIENTS`), by issuer URL: `takers` are the
    configured issuers whose mapping reads the registry. A client id is only unique at its issuer: registered
    for one issuer, it must not make a system caller of another issuer's client of the same name (a patients'
    provider where anyone may register a client could otherwise name theirs after an EHR vendor's).

    The file is `{"issuers": {"<issuer URL>": {"<client id>": "<system caller name>"}}}`; the short form
    `{"clients": {"<client id>": "<system caller name>"}}` names no issuer, so it is only accepted when one
    configured issuer at most takes system clients."""
    out: dict[str, dict[str, dict[str, str]]] = {url: {"clients": {}} for url in takers}
    if path is None:
        return out
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict) and "issuers" in data:
        issuers = data["issuers"]
        if not isinstance(issuers, dict):
            raise ValueError(f"{path}: 'issuers' must be a JSON object of issuer URL -> its clients")
        for url, clients in issuers.items():
            if url not in out:
                raise ValueError(f"{path}: {url!r} is not an issuer of FHIR_DMP_OIDC_ISSUER whose claim mapping "
                                 f"takes system clients ({', '.join(takers) or 'none does'})")
            out[url] = {"clients": _clients(path, clients)}
        return out
    clients = _clients(path, data.get("clients", data) if isinstance(data, dict) else data)
    if len(takers) > 1 and clients:
        raise ValueError(f"{path}: several issuers take system clients ({', '.join(takers)}): say whose each client "
                         'is, {"issuers": {"<issuer URL>": {"<client id>": "<system caller name>"}}}')
    return {url: {"clients": clients} for url in takers}


def _clients(path: Path, clients: Any) -> dict[str, str]:
    if not isinstance(clients, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in clients.items()):
        raise ValueError(f"{path}: the registered clients must be a JSON object of client id -> system name")
    return clients
