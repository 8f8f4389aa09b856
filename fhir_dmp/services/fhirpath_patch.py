"""FHIRPath Patch (R4 fhirpatch.html): a Parameters resource of `operation`s, each `add`, `insert`, `delete`,
`replace` or `move` at a FHIRPath `path`, applied to a copy of the resource.

The paths are the subset patches use in practice (the R4 examples, HAPI's and Firely's tests): element names
(a choice by its base name, `Observation.value`), indexers `[n]`, `first()`, `last()`, `extension('url')`,
`ofType(Type)` and `where(criterion)`, whose criterion fhirpathpy evaluates on each candidate. A path is walked
to locations (the container and key of each node), so that a primitive can be replaced or deleted in place.
An element's shape (its type, whether it repeats) comes from the R4 element table (`structure.element_shape`),
so that an `add` appends to a list and a value given in parts takes the R4 shape.

A patch document that is not one (a Parameters R4 refuses, no operation, an unknown type, a missing part) is a
400; a patch that cannot be applied to this resource (a path matching several nodes where one is needed, an index
out of range, an element R4 does not have) is a 422, as R4's http.html#patch says.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import fhirpathpy

from fhir_dmp.errors import FhirError, Issue, bad_request, unprocessable
from fhir_dmp.validation.structure import element_shape, validate_structure

TYPES = ("add", "insert", "delete", "replace", "move")
_INDEXED = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\[(\d+)\]$")
_CALL = re.compile(r"^([A-Za-z]+)\((.*)\)$", re.S)


@dataclass
class _Loc:
    """A node of the resource: `holder[key]` (a dict and a name, or a list and an index); `owner` is the dict
    and name holding that list, so that deleting its last item removes the element."""
    holder: Any
    key: Any
    type: str
    owner: tuple[dict, str] | None = None

    @property
    def value(self) -> Any:
        return self.holder[self.key]


def is_fhirpath_patch(body: object) -> bool:
    return isinstance(body, dict) and body.get("resourceType") == "Parameters"


def apply(parameters: dict, resource: dict) -> dict:
    """The resource after the patch (the original is left untouched). A Parameters R4 refuses (an unknown element,
    a repeated value, what an XML patch carries as JSON would: `http/fhirxml_read.py`) is no patch: a 400 listing
    every structure issue at once, before any operation is read."""
    issues = [i for i in validate_structure(parameters) if i.severity in ("error", "fatal")]
    if issues:
        raise FhirError(400, issues)
    operations = _operations(parameters)
    out = copy.deepcopy(resource)
    root = {"$": out}
    for number, op in enumerate(operations):
        try:
            _apply_one(op, root, str(resource.get("resourceType")))
        except FhirError as error:
            error.issues[:] = [Issue(i.code, f"FHIRPath Patch operation {number + 1} ({op['type']} "
                                     f"{op.get('path')}): {i.diagnostics}",
                                     i.expression or ((str(op["path"]),) if op.get("path") else ()), i.severity)
                               for i in error.issues]
            raise
    return root["$"]


# -- the patch document ----------------------------------------------------------------------------------------
def _operations(parameters: dict) -> list[dict]:
    params = parameters.get("parameter")
    if not isinstance(params, list) or not params:
        raise bad_request("A FHIRPath Patch is a Parameters resource with at least one 'operation'",
                          "Parameters.parameter", code="structure")
    out = []
    for i, p in enumerate(params):
        where = f"Parameters.parameter[{i}]"
        if not isinstance(p, dict) or p.get("name") != "operation" or not isinstance(p.get("part"), list):
            raise bad_request(f"{where}: a FHIRPath Patch parameter is an 'operation' with parts", where,
                              code="structure")
        op: dict[str, Any] = {}
        for part in p["part"]:
            name = part.get("name") if isinstance(part, dict) else None
            if name == "value":
                op["value"] = _value_of(part, f"{where}.part")
            elif name in ("type", "path", "name", "index", "source", "destination"):
                op[name] = next((v for k, v in part.items() if k.startswith("value")), None)
            else:
                raise bad_request(f"{where}: unknown part {name!r}", where, code="structure")
        kind = op.get("type")
        if kind not in TYPES:
            raise bad_request(f"{where}: type must be one of {', '.join(TYPES)}, not {kind!r}", where,
                              code="structure")
        needed = {"add": ("path", "name", "value"), "insert": ("path", "value", "index"), "delete": ("path",),
                  "replace": ("path", "value"), "move": ("path", "source", "destination")}[kind]
        missing = [n for n in needed if op.get(n) is None]
        if missing or not isinstance(op["path"], str):
            raise bad_request(f"{where}: a {kind} needs {', '.join(needed)}", where, code="structure")
        for n in ("index", "source", "destination"):
            if n in needed and (type(op[n]) is not int or op[n] < 0):
                raise bad_request(f"{where}: {n} must be a non-negative integer", where, code="structure")
        out.append(op)
    return out


def _value_of(part: dict, where: str) -> Any:
    """A part's value: its value[x] or resource, or, for an element of no named type, its parts as an object."""
    for key, value in part.items():
        if key.startswith("value") or key == "resource":
            return value
    parts = part.get("part")
    if not isinstance(parts, list) or not parts:
        raise bad_request(f"{where}: a value part needs a value[x] or parts", where, code="structure")
    out: dict[str, Any] = {}
    for sub in parts:
        name = sub.get("name") if isinstance(sub, dict) else None
        if not isinstance(name, str):
            raise bad_request(f"{where}: every part of a value needs a name", where, code="structure")
        value = _value_of(sub, where)
        if name in out:
            out[name] = (out[name] if isinstance(out[name], list) else [out[name]]) + [value]
        else:
            out[name] = value
    return out


def _fit(value: Any, type_name: str) -> Any:
    """A value built from parts in the R4 shape of its type: a single item of a repeating element as a list."""
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        shape = element_shape(type_name, key)
        if shape is not None:
            item = [_fit(v, shape[0]) for v in item] if isinstance(item, list) else _fit(item, shape[0])
            if shape[1] and not isinstance(item, list):
                item = [item]
        out[key] = item
    return out


# -- operations ------------------------------------------------------------------------------------------------
def _apply_one(op: dict, root: dict, rtype: str) -> None:
    kind, path = op["type"], op["path"]
    if kind == "add":
        target = _one(_resolve(root, rtype, path), path)
        if not isinstance(target.value, dict):
            raise unprocessable(f"{path} is a primitive value: nothing can be added to it")
        name = op["name"]
        shape = element_shape(target.type, name) if isinstance(name, str) else None
        if shape is None:
            raise unprocessable(f"{target.type} has no element {name!r}")
        value = _fit(op["value"], shape[0])
        if shape[1]:
            target.value.setdefault(name, []).append(value)
        elif name in target.value:
            raise unprocessable(f"{path}.{name} has a value already: use replace")
        else:
            target.value[name] = value
    elif kind == "delete":
        found = _resolve(root, rtype, path)
        if len(found) > 1:
            raise unprocessable(f"{path} matches {len(found)} elements; a delete takes one")
        for loc in found:
            _remove(loc)
    elif kind == "replace":
        loc = _one(_resolve(root, rtype, path), path)
        loc.holder[loc.key] = _fit(op["value"], loc.type)
    else:  # insert, move: on the list a path names
        items, item_type = _list_at(root, rtype, path, create=kind == "insert")
        if kind == "insert":
            if op["index"] > len(items):
                raise unprocessable(f"index {op['index']} is beyond the {len(items)} items of {path}")
            items.insert(op["index"], _fit(op["value"], item_type))
        else:
            if op["source"] >= len(items) or op["destination"] >= len(items):
                raise unprocessable(f"{path} has {len(items)} items: source and destination must be below that")
            items.insert(op["destination"], items.pop(op["source"]))


def _one(found: list[_Loc], path: str) -> _Loc:
    if len(found) != 1:
        raise unprocessable(f"{path} matches {len(found)} elements, not one")
    return found[0]


def _remove(loc: _Loc) -> None:
    del loc.holder[loc.key]
    if isinstance(loc.holder, list) and not loc.holder and loc.owner is not None:
        owner, name = loc.owner
        owner.pop(name, None)


def _list_at(root: dict, rtype: str, path: str, *, create: bool) -> tuple[list, str]:
    """The list of a repeating element `path` names (its last step an element name), and its items' type."""
    steps = _steps(path, rtype)
    if not steps or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", steps[-1]):
        raise unprocessable(f"{path} does not end with the name of a repeating element")
    parent = _one(_walk([_Loc(root, "$", rtype)], steps[:-1]), path.rsplit(".", 1)[0])
    name = steps[-1]
    shape = element_shape(parent.type, name) if isinstance(parent.value, dict) else None
    if shape is None or not shape[1]:
        raise unprocessable(f"{path} is not a repeating element")
    items = parent.value.get(name)
    if items is None and create:
        items = parent.value[name] = []
    return (items if isinstance(items, list) else []), shape[0]


# -- paths -----------------------------------------------------------------------------------------------------
def _resolve(root: dict, rtype: str, path: str) -> list[_Loc]:
    return _walk([_Loc(root, "$", rtype)], _steps(path, rtype))


def _steps(path: str, rtype: str) -> list[str]:
    """The path's steps at top-level dots (not those inside quotes or parentheses), its type name dropped."""
    steps, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(path):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"`":
            quote = char
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == "." and depth == 0:
            steps.append(path[start:i].strip())
            start = i + 1
    steps.append(path[start:].strip())
    if any(not s for s in steps):
        raise bad_request(f"FHIRPath Patch: {path!r} is not a path", code="structure")
    return steps[1:] if steps[0] in (rtype, "Resource", "DomainResource") else steps


def _walk(locs: list[_Loc], steps: list[str]) -> list[_Loc]:
    for step in steps:
        indexed = _INDEXED.match(step)
        call = _CALL.match(step)
        if indexed:
            chosen = _children(locs, indexed.group(1))
            index = int(indexed.group(2))
            locs = chosen[index:index + 1]
        elif call:
            locs = _function(locs, call.group(1), call.group(2).strip())
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", step):
            locs = _children(locs, step)
        else:
            raise unprocessable(f"FHIRPath Patch: the step {step!r} is not supported")
    return locs


def _children(locs: list[_Loc], name: str) -> list[_Loc]:
    out = []
    for loc in locs:
        node = loc.value
        if not isinstance(node, dict):
            continue
        keys = [name] if name in node else [k for k in node if k.startswith(name) and k[len(name):][:1].isupper()]
        for key in keys:
            shape = element_shape(loc.type, key)
            typ = shape[0] if shape is not None else "Element"
            value = node[key]
            if isinstance(value, list):
                out += [_Loc(value, i, typ, (node, key)) for i in range(len(value))]
            else:
                out.append(_Loc(node, key, typ))
    return out


def _function(locs: list[_Loc], name: str, argument: str) -> list[_Loc]:
    if name == "first" and not argument:
        return locs[:1]
    if name == "last" and not argument:
        return locs[-1:]
    if name == "extension":
        url = argument.strip("'\"")
        return [loc for loc in _children(locs, "extension") if loc.value.get("url") == url]
    if name == "ofType":
        return [loc for loc in locs if loc.type.lower() == argument.lower()
                or (isinstance(loc.value, dict) and loc.value.get("resourceType") == argument)]
    if name == "where":
        return [loc for loc in locs if _holds(loc.value, argument)]
    raise unprocessable(f"FHIRPath Patch: the function {name}() is not supported in a path")


def _holds(node: Any, criterion: str) -> bool:
    try:
        return fhirpathpy.evaluate(node, criterion) == [True]
    except Exception as error:  # fhirpathpy raises anything from its parser
        raise bad_request(f"FHIRPath Patch: cannot evaluate where({criterion}): {error}", code="structure") \
            from None
