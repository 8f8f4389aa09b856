"""The terminology operations over the shipped files: CodeSystem/$lookup, ValueSet/$expand and
ValueSet/$validate-code, at type level and on an instance (R4 OperationDefinitions CodeSystem-lookup,
ValueSet-expand, ValueSet-validate-code). The computing is `fhir_dmp.terminology`'s; this module is the wire.

GET takes the parameters in the URL; POST takes a Parameters resource (URL parameters count too). Answers are
a Parameters resource, or the expanded ValueSet. A parameter this server cannot honour and that would change
the answer (`date`, `context`, the system-version ones) is a 400 `not-supported`, never silently dropped;
`displayLanguage` is accepted (every shipped display is French). Unknown parameters: ignored, or a 400 under
`Prefer: handling=strict`, as in searches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fhir_dmp.config import Settings
from fhir_dmp.errors import FhirError, bad_request, not_found
from fhir_dmp.services.requests import FhirRequest, FhirResponse, method_not_allowed
from fhir_dmp.services.unit import Unit
from fhir_dmp.terminology.expansion import expand, not_supported, validate_code
from fhir_dmp.terminology.store import Conformance

_TEXT = ("valueUri", "valueCanonical", "valueUrl", "valueString", "valueCode")  # accepted for uri, code, string
_BODY_KEY = {"integer": ("valueInteger",), "boolean": ("valueBoolean",), "Coding": ("valueCoding",),
             "CodeableConcept": ("valueCodeableConcept",), "ValueSet": ("resource",)}
Args = dict[str, list[Any]]


@dataclass(frozen=True)
class Operation:
    name: str
    definition: str
    accepts: Mapping[str, str]  # parameter -> kind: uri, code, string, integer, boolean, Coding, CodeableConcept...
    refuses: tuple[str, ...]  # known parameters this server does not implement
    answer: Callable[[Conformance, FhirRequest, Args, Settings], dict]
    repeats: frozenset[str] = frozenset()


def run(u: Unit, req: FhirRequest) -> FhirResponse:
    conf, settings = u.rt.conformance, u.rt.settings
    rtype = req.resource_type or ""
    op = OPERATIONS.get((rtype, req.operation or ""))
    if op is None:
        offered = ", ".join(f"{t}/{n}" for t, n in OPERATIONS) or "none"
        raise FhirError.of(400, "not-supported", f"Operation {req.operation} is not supported on "
                           f"{rtype or 'the system'} (supported: {offered})")
    if req.method not in ("GET", "POST"):
        raise method_not_allowed(req)
    if req.id:
        u.touch("", f"{rtype}/{req.id}")
        _instance(conf, rtype, req.id)
    else:
        u.touch("", query=req.query_text)
    return FhirResponse(200, op.answer(conf, req, _arguments(req, op), settings))


def declared(rtype: str) -> list[dict]:
    """CapabilityStatement.rest.resource.operation of a type."""
    return [{"name": op.name, "definition": op.definition} for (t, _), op in OPERATIONS.items() if t == rtype]


def _instance(conf: Conformance, rtype: str, rid: str) -> dict:
    resource = conf.read(rtype, rid)
    if resource is None:
        raise not_found(f"{rtype}/{rid} does not exist")
    return resource


# -- parameters ----------------------------------------------------------------------------------------------
def _arguments(req: FhirRequest, op: Operation) -> Args:
    given: list[tuple[str, Any, str | None]] = [(k, v, None) for k, v in req.query if k not in ("_format", "_pretty")]
    if req.method == "POST":
        body = req.body
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise bad_request(f"POST ${op.name} takes a Parameters resource", code="structure")
        parameters = body.get("parameter") or []
        for i, p in enumerate(parameters if isinstance(parameters, list) else [None]):
            where = f"Parameters.parameter[{i}]"
            values = [k for k in p if k.startswith("value") or k == "resource"] if isinstance(p, dict) else []
            if not isinstance(p, dict) or not isinstance(p.get("name"), str) or len(values) != 1:
                raise bad_request(f"{where} needs a name and one value", where, code="structure")
            given.append((p["name"], p[values[0]], values[0]))
    out: Args = {}
    for name, value, key in given:
        if name in op.refuses:
            raise not_supported(f"${op.name}: parameter '{name}' is not supported by this server")
        kind = op.accepts.get(name)
        if kind is None:
            if req.strict:
                raise bad_request(f"${op.name} has no parameter '{name}'", name, code="not-supported")
            continue
        out.setdefault(name, []).append(_typed(op.name, name, kind, value, key))
        if len(out[name]) > 1 and name not in op.repeats:
            raise bad_request(f"${op.name}: parameter '{name}' is given more than once", name)
    return out


def _typed(op: str, name: str, kind: str, value: Any, key: str | None) -> Any:
    """A parameter's value checked against its kind; `key` is the value[x] of a Parameters entry, None in a URL."""
    wrong = bad_request(f"${op}: parameter '{name}' must be a {kind}", name)
    if key is None:  # from the URL: text
        if kind in ("uri", "code", "string"):
            return value
        if kind == "integer":
            if not (value.isascii() and value.isdigit()) or len(value) > 9:
                raise wrong
            return int(value)
        if kind == "boolean":
            if value not in ("true", "false"):
                raise wrong
            return value == "true"
        raise bad_request(f"${op}: parameter '{name}' ({kind}) can only be given in a POSTed Parameters", name)
    if kind in ("uri", "code", "string"):
        if key not in _TEXT or not isinstance(value, str):
            raise wrong
        return value
    if key not in _BODY_KEY[kind]:
        raise wrong
    if kind == "integer" and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise wrong
    if kind == "boolean" and not isinstance(value, bool):
        raise wrong
    if kind in ("Coding", "CodeableConcept") and not isinstance(value, dict):
        raise wrong
    if kind == "ValueSet" and not (isinstance(value, dict) and value.get("resourceType") == "ValueSet"):
        raise wrong
    return value


def _one(args: Args, name: str, default: Any = None) -> Any:
    return args[name][0] if name in args else default


def _required(what: str, name: str) -> FhirError:
    return bad_request(f"{what}: parameter '{name}' is required", name, code="required")


# -- CodeSystem/$lookup ----------------------------------------------------------------------------------------
def _lookup(conf: Conformance, req: FhirRequest, args: Args, settings: Settings) -> dict:
    system, code, version = _one(args, "system"), _one(args, "code"), _one(args, "version")
    coding = _one(args, "coding")
    if coding is not None:
        if code is not None:
            raise bad_request("$lookup: give code (and system) or coding, not both", "coding")
        system, code, version = coding.get("system"), coding.get("code"), coding.get("version") or version
    if req.id:
        url = _instance(conf, "CodeSystem", req.id)["url"]
        if system not in (None, url):
            raise bad_request(f"$lookup on CodeSystem/{req.id}: system {system} is not its url {url}", "system")
        system = url
    if not isinstance(code, str) or not code:
        raise _required("$lookup", "code")
    if not isinstance(system, str) or not system:
        raise _required("$lookup", "system")
    wanted = frozenset(args["property"]) if "property" in args else None
    found = conf.lookup(system, code, version, wanted)
    out: list[dict] = [{"name": "name", "valueString": found.name}]
    if found.version:
        out.append({"name": "version", "valueString": found.version})
    out.append({"name": "display", "valueString": found.display})
    for d in found.designations:
        parts = ([{"name": "language", "valueCode": d["language"]}] if d.get("language") else []) + (
            [{"name": "use", "valueCoding": d["use"]}] if d.get("use") else []) + [
            {"name": "value", "valueString": d.get("value", "")}]
        out.append({"name": "designation", "part": parts})
    for prop, key, value in found.properties:
        out.append({"name": "property", "part": [{"name": "code", "valueCode": prop}, {"name": "value", key: value}]})
    return {"resourceType": "Parameters", "parameter": out}


# -- ValueSet/$expand and $validate-code -----------------------------------------------------------------------
def _valueset(conf: Conformance, req: FhirRequest, args: Args, what: str) -> dict:
    url, version, inline = _one(args, "url"), _one(args, "valueSetVersion"), _one(args, "valueSet")
    if req.id:
        vs = _instance(conf, "ValueSet", req.id)
        if url is not None and url.partition("|")[0] != vs["url"]:
            raise bad_request(f"{what} on ValueSet/{req.id}: url {url} is not its url {vs['url']}", "url")
        if version is not None and version != vs.get("version"):
            raise not_found(f"ValueSet/{req.id} is version {vs.get('version')}, not {version}")
        return vs
    if inline is not None:
        if url is not None:
            raise bad_request(f"{what}: give url or valueSet, not both", "valueSet")
        return inline
    if not url:
        raise _required(what, "url")
    vs = conf.resolve("ValueSet", url, version)
    if vs is None:
        shipped = conf.versions_of("ValueSet", url.partition("|")[0])
        raise not_found(f"ValueSet {url} is shipped in version {', '.join(shipped)} only" if shipped
                        else f"ValueSet {url} is not shipped by this server")
    return vs


def _expand(conf: Conformance, req: FhirRequest, args: Args, settings: Settings) -> dict:
    vs = _valueset(conf, req, args, "$expand")
    count = _one(args, "count")
    return expand(conf, vs, text=_one(args, "filter"), offset=_one(args, "offset", 0),
                  count=None if count is None else min(count, settings.max_count),
                  active_only=_one(args, "activeOnly", False), designations=_one(args, "includeDesignations", False),
                  selectable_only=_one(args, "excludeNotForUI", False))


def _validate(conf: Conformance, req: FhirRequest, args: Args, settings: Settings) -> dict:
    vs = _valueset(conf, req, args, "$validate-code")
    version = _one(args, "systemVersion")
    if "coding" in args:
        codings = [args["coding"][0]]
    elif "codeableConcept" in args:
        codings = args["codeableConcept"][0].get("coding") or []
        if not codings:
            raise bad_request("$validate-code: the codeableConcept has no coding", "codeableConcept")
    else:
        if not _one(args, "code"):
            raise bad_request("$validate-code: give code and system, coding or codeableConcept", "code",
                              code="required")
        codings = [{"system": _one(args, "system"), "code": args["code"][0], "display": _one(args, "display")}]
    results = []
    for coding in codings:
        if not isinstance(coding, dict) or not coding.get("system") or not coding.get("code"):
            raise bad_request("$validate-code: a code needs its system", "system", code="required")
        results.append(validate_code(conf, vs, coding["system"], coding["code"], coding.get("display"),
                                     coding.get("version") or version, _one(args, "abstract", False)))
    best = next((r for r in results if r.result), results[0])
    message = best.message if best.result else "; ".join(r.message for r in results if r.message)
    out: list[dict] = [{"name": "result", "valueBoolean": best.result}]
    if message:
        out.append({"name": "message", "valueString": message})
    if best.display:
        out.append({"name": "display", "valueString": best.display})
    return {"resourceType": "Parameters", "parameter": out}


OPERATIONS: dict[tuple[str, str], Operation] = {
    ("CodeSystem", "$lookup"): Operation(
        "lookup", "http://hl7.org/fhir/OperationDefinition/CodeSystem-lookup",
        {"code": "code", "system": "uri", "version": "string", "coding": "Coding", "property": "code",
         "displayLanguage": "code"}, ("date",), _lookup, frozenset({"property"})),
    ("ValueSet", "$expand"): Operation(
        "expand", "http://hl7.org/fhir/OperationDefinition/ValueSet-expand",
        {"url": "uri", "valueSet": "ValueSet", "valueSetVersion": "string", "filter": "string", "offset": "integer",
         "count": "integer", "activeOnly": "boolean", "includeDesignations": "boolean", "excludeNotForUI": "boolean",
         "excludeNested": "boolean", "excludePostCoordinated": "boolean", "includeDefinition": "boolean",
         "displayLanguage": "code"},
        ("context", "contextDirection", "date", "designation", "exclude-system", "system-version",
         "check-system-version", "force-system-version"), _expand),
    ("ValueSet", "$validate-code"): Operation(
        "validate-code", "http://hl7.org/fhir/OperationDefinition/ValueSet-validate-code",
        {"url": "uri", "valueSet": "ValueSet", "valueSetVersion": "string", "code": "code", "system": "uri",
         "systemVersion": "string", "display": "string", "coding": "Coding", "codeableConcept": "CodeableConcept",
         "abstract": "boolean", "displayLanguage": "code"}, ("context", "date"), _validate),
}
