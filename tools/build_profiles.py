"""Generate `profiles/StructureDefinition-<id>.json`: differential and snapshot, from `profiles/src/`.

Each `profiles/src/<id>.json` holds one profile's metadata and its differential: ElementDefinitions
keyed by `id` (`Patient.identifier:INS-NIR.system`), written as FHIR JSON; `path` is derived from
`id`. `profiles/src/aliases.json` names canonicals and codes (`$JDV_J66`, `$INS_NIR`); every profile
is an alias too (`$dmp-patient`). A `$NAME` token in any string but prose (descriptions, shorts, human
texts), FHIRPath included, is replaced (`$this`, `$index` and `$total` are FHIRPath's and left alone;
any other unknown `$NAME` is an error).

The snapshot is the base type's snapshot from the official package hl7.fhir.r4.core 4.0.1 (kept in
../shared/reference/fhir-r4) with the differential merged onto it, one element at a time, in the
source's order, which must be the snapshot's (FHIR's rule for differentials; checked):
- an element the base does not list is reached by expanding its parent: the children of the
  parent's single type (Identifier, Reference, Extension...: that type's snapshot, ids and paths
  rewritten, `base` kept), of its one remaining type for a choice (`value[x]` restricted to one
  type), or of the element a `contentReference` points to (`Composition.section.section`);
- a slice (`sliceName`) copies the unsliced element and its subtree as the profile has them so far
  (constraints on the unsliced element hold for every slice), without `slicing`, with the base
  minimum, and goes after the previous slices; slicing must be declared first, except on
  `extension` elements (by `url`, as SUSHI does) and on choices (a type slice `value[x]:valueQuantity`,
  by type), where the usual slicing is added, to the differential too;
- merging only narrows: min up, max down, types a subset of the base's (target profiles of an
  allowed type), fixed/pattern of the element's type, no weaker strength than a `required`
  binding; constraints are appended (with `source`), keys unique. Anything else is an error.
Extensions need less writing: the root element's short/definition, `Extension.url` and, for a
complex extension, `Extension.value[x]` 0..0 and each sub-extension's `url` are filled in.

Out of scope (errors, not silent output): re-slicing, slicing inside a contained resource
(`Bundle.entry.resource` children), type profiles expanded from non-local profiles.
Output is deterministic: keys in the R4 order of ElementDefinition and StructureDefinition, the
differential in snapshot order, no timestamps.

Run: `python tools/build_profiles.py` (writes), `--check` (exit 1 if a file would change).
"""

from __future__ import annotations

import copy
import json
import re
import sys
import tarfile
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC, OUT = ROOT / "profiles" / "src", ROOT / "profiles"
PACKAGE = ROOT.parent / "shared" / "reference" / "fhir-r4" / "hl7.fhir.r4.core-4.0.1.tgz"
BASE = "https://fhir-dmp.example.org"
CORE = "http://hl7.org/fhir/StructureDefinition/"
FHIR_TYPE = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
FHIRPATH_VARS = {"$this", "$index", "$total"}
EXT_SLICING = {"discriminator": [{"type": "value", "path": "url"}], "ordered": False, "rules": "open"}
TYPE_SLICING = {"discriminator": [{"type": "type", "path": "$this"}], "ordered": False, "rules": "open"}
DOC_KEYS = {"short", "definition", "comment", "requirements", "alias", "label", "mustSupport", "maxLength",
            "meaningWhenMissing", "example"}
STATUS_EXTENSIONS = {CORE + "structuredefinition-standards-status", CORE + "structuredefinition-normative-version"}
PROSE = {"title", "description", "purpose", "short", "definition", "comment", "requirements", "human"}
BINDABLE = {"code", "Coding", "CodeableConcept", "Quantity", "string", "uri"}


class ProfileError(ValueError):
    """A differential the generator refuses (it would produce a wrong snapshot)."""


# -- the official R4 package ------------------------------------------------------------------------
class Core:
    """The StructureDefinitions of hl7.fhir.r4.core by id (a base type's id is its name), read once."""

    def __init__(self, package: Path = PACKAGE) -> None:
        self._sds: dict[str, dict] = {}
        with tarfile.open(package) as tar:
            for member in tar:
                if member.name.startswith("package/StructureDefinition-") and member.name.endswith(".json"):
                    sd = json.load(tar.extractfile(member))
                    self._sds[sd["id"]] = sd

    def sd(self, type_name: str) -> dict:
        if type_name not in self._sds:
            raise ProfileError(f"{type_name}: not a type of the R4 core package")
        return self._sds[type_name]

    def is_resource(self, type_name: str) -> bool:
        return self._sds.get(type_name, {}).get("kind") == "resource"

    def key_order(self, type_name: str) -> list[str]:
        """JSON property names of a type in R4 order; a choice as its name (`fixed[x]`)."""
        return [e["path"].split(".", 1)[1] for e in self.sd(type_name)["snapshot"]["element"]
                if e["path"].count(".") == 1]


def ordered(obj: dict, order: list[str]) -> dict:
    """`obj` with its keys in R4 order; a choice key (`fixedUri`) sorts as its choice (`fixed[x]`)."""
    def rank(key: str) -> int:
        if key in order:
            return order.index(key)
        for i, name in enumerate(order):
            prefix = name.removesuffix("[x]")
            if name.endswith("[x]") and key.startswith(prefix) and key[len(prefix):][:1].isupper():
                return i
        raise ProfileError(f"unknown property {key!r}")
    return {k: obj[k] for k in sorted(obj, key=rank)}


def type_code(t: dict) -> str:
    """`uri` for an element typed System.String with a fhir-type extension (Extension.url), else `code`."""
    for ext in t.get("extension", []):
        if ext.get("url") == FHIR_TYPE:
            return ext.get("valueUrl") or ext["valueUri"]
    return t["code"]


# -- sources ----------------------------------------------------------------------------------------
def load_sources(src: Path = SRC) -> tuple[dict[str, dict], dict[str, str]]:
    """The profile specs by id, and the alias table (aliases.json plus one `$<id>` per profile)."""
    specs = {}
    for path in sorted(src.glob("*.json")):
        if path.name != "aliases.json":
            spec = json.loads(path.read_text(encoding="utf-8"))
            if spec.get("id") != path.stem:
                raise ProfileError(f"{path.name}: id {spec.get('id')!r} must be the file name")
            specs[spec["id"]] = spec
    aliases = json.loads((src / "aliases.json").read_text(encoding="utf-8"))
    aliases.pop("comment", None)
    for pid, spec in specs.items():
        if "url" in spec:
            spec["url"] = resolve(spec["url"], aliases)
        aliases[f"${pid}"] = canonical(spec)
    return specs, aliases


def canonical(spec: dict) -> str:
    return spec.get("url") or f"{BASE}/StructureDefinition/{spec['id']}"


def resolve(value, aliases: dict[str, str]):
    """Replace every `$NAME` alias token inside strings, recursively, prose excepted; unknown tokens are
    errors."""
    if isinstance(value, dict):
        return {k: v if k in PROSE else resolve(v, aliases) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, aliases) for v in value]
    if isinstance(value, str) and "$" in value:
        def sub(match: re.Match) -> str:
            token = match.group(0)
            if token in FHIRPATH_VARS:
                return token
            if token not in aliases:
                raise ProfileError(f"unknown alias {token}")
            return aliases[token]
        return re.sub(r"\$[A-Za-z](?:[A-Za-z0-9_\-]*[A-Za-z0-9])?", sub, value)
    return value


# -- snapshot ---------------------------------------------------------------------------------------
class Snapshot:
    """The element list being built; `built` holds the snapshots of profiles generated before."""

    def __init__(self, base_elements: list[dict], url: str, core: Core, types: dict[str, str],
                 built: dict[str, dict]) -> None:
        self.elements = [self.own(e) for e in base_elements]
        self.pristine = {e["id"]: e for e in base_elements}
        self.url, self.core, self.types, self.built = url, core, types, built
        self.added: dict[str, dict] = {}  # differential entries the generator adds (default slicing)

    @staticmethod
    def own(element: dict) -> dict:
        """A copy without the base's standards-status extensions (they describe R4, not the profile)."""
        copied = copy.deepcopy(element)
        kept = [x for x in copied.get("extension", []) if x.get("url") not in STATUS_EXTENSIONS]
        if kept:
            copied["extension"] = kept
        else:
            copied.pop("extension", None)
        return copied

    def index(self, eid: str) -> int | None:
        return next((i for i, e in enumerate(self.elements) if e["id"] == eid), None)

    def ensure(self, eid: str, declaring: str) -> int:
        """The index of element `eid`, expanding a parent or creating the slice `declaring` declares."""
        found = self.index(eid)
        if found is not None:
            return found
        if "." not in eid:
            raise ProfileError(f"{eid}: not an element of this type")
        parent, last = eid.rsplit(".", 1)
        name, _, slice_name = last.partition(":")
        if slice_name:
            if ":" in slice_name:
                raise ProfileError(f"{eid}: re-slicing is not supported")
            if eid != declaring:
                raise ProfileError(f"{declaring}: slice {eid} must be declared (with sliceName) before its children")
            return self.new_slice(self.ensure(f"{parent}.{name}", declaring), slice_name)
        pi = self.ensure(parent, declaring)
        if not self.has_children(pi):
            self.expand(pi)
        found = self.index(eid)
        if found is None:
            raise ProfileError(f"{eid}: no such element")
        return found

    def has_children(self, i: int) -> bool:
        return i + 1 < len(self.elements) and self.elements[i + 1]["id"].startswith(self.elements[i]["id"] + ".")

    def expand(self, i: int) -> None:
        """Insert the children of element i: from the element its contentReference names, else its one type."""
        el = self.elements[i]
        if "contentReference" in el:
            target = el["contentReference"].lstrip("#")
            pristine = [e for e in self.pristine.values() if e["path"] == target and ":" not in e["id"]]
            if not pristine:
                raise ProfileError(f"{el['id']}: contentReference {target} not in the base")
            source = [e for e in self.pristine.values() if e["path"].startswith(target + ".") and ":" not in e["id"]]
            root_id, root_path = pristine[0]["id"], target
            del el["contentReference"]
            el["type"] = copy.deepcopy(pristine[0]["type"])
        else:
            types = el.get("type", [])
            if len(types) != 1:
                raise ProfileError(f"{el['id']}: restrict it to one type (or slice it) before naming its children")
            code = type_code(types[0])
            local = [p for p in types[0].get("profile", []) if p in self.built]
            if local:
                source = self.built[local[0]]["snapshot"]["element"]
            elif code[0].isupper() and code not in ("Resource", "DomainResource"):
                source = self.core.sd(code)["snapshot"]["element"]
            else:
                raise ProfileError(f"{el['id']}: children of a {code} cannot be constrained here")
            root_id, root_path = source[0]["id"], source[0]["path"]
            source = source[1:]
        children = []
        for child in source:
            new = self.own(child)
            new["id"] = el["id"] + child["id"][len(root_id):]
            new["path"] = el["path"] + child["path"][len(root_path):]
            children.append(new)
        self.elements[i + 1:i + 1] = children

    def new_slice(self, bi: int, slice_name: str) -> int:
        """Copy the unsliced element bi (and its subtree) as slice `slice_name`, after its last slice."""
        base = self.elements[bi]
        bid = base["id"]
        if "slicing" not in base:
            default = self.default_slicing(base)
            if default is None:
                raise ProfileError(f"{bid}: declare its slicing before slice {slice_name}")
            base["slicing"] = copy.deepcopy(default)
            self.added[bid] = {"id": bid, "path": base["path"], "slicing": copy.deepcopy(default)}
        end = bi + 1
        while end < len(self.elements) and self.elements[end]["id"].startswith((bid + ".", bid + ":")):
            end += 1
        subtree = [e for e in self.elements[bi:end] if not e["id"].startswith(bid + ":")]
        copies = []
        for el in subtree:
            new = copy.deepcopy(el)
            new["id"] = f"{bid}:{slice_name}" + el["id"][len(bid):]
            copies.append(new)
        root = copies[0]
        root.pop("slicing", None)
        root["sliceName"] = slice_name
        root["min"] = base["base"]["min"]
        if base["path"].endswith("[x]"):  # a type slice: valueQuantity keeps the Quantity type only
            wanted = slice_name[len(base["path"].rsplit(".", 1)[1]) - 3:]
            kept = [t for t in base["type"] if t["code"][:1].upper() + t["code"][1:] == wanted]
            if not slice_name.startswith(base["path"].rsplit(".", 1)[1][:-3]) or not kept:
                raise ProfileError(f"{bid}: type slice {slice_name} names no type of the choice")
            root["type"] = kept
        self.elements[end:end] = copies
        return end

    @staticmethod
    def default_slicing(el: dict) -> dict | None:
        if el["path"].endswith((".extension", ".modifierExtension")):
            return EXT_SLICING
        if el["path"].endswith("[x]"):
            return TYPE_SLICING
        return None

    # -- merging one differential element ------------------------------------------------------------
    def apply(self, i: int, diff: dict) -> None:
        el = self.elements[i]
        where = diff["id"]
        for key, value in diff.items():
            if key in ("id", "path"):
                continue
            if key == "sliceName":
                if el.get("sliceName") != value:
                    raise ProfileError(f"{where}: sliceName {value!r} does not match the element id")
            elif key in ("min", "max"):
                self.cardinality(el, diff, where)
            elif key == "type":
                el["type"] = self.narrow_types(el, value, where)
            elif key == "binding":
                if el.get("binding", {}).get("strength") == "required" and value["strength"] != "required":
                    raise ProfileError(f"{where}: a required binding cannot be weakened")
                if not {type_code(t) for t in el.get("type", [])} & BINDABLE:
                    raise ProfileError(f"{where}: a binding needs a coded type")
                el["binding"] = value
            elif key == "constraint":
                known = {c["key"] for c in el.get("constraint", [])}
                for c in value:
                    if c["key"] in known or not {"key", "severity", "human", "expression"} <= set(c):
                        raise ProfileError(f"{where}: constraint {c.get('key')} repeated or incomplete")
                    el.setdefault("constraint", []).append({**c, "source": self.url})
            elif key == "mapping":
                el.setdefault("mapping", []).extend(value)
            elif key.startswith(("fixed", "pattern")):
                self.fixed(el, key, value, where)
            elif key == "slicing":
                if el["max"] == "1" and not el["path"].endswith("[x]"):
                    raise ProfileError(f"{where}: only a repeating element or a choice can be sliced")
                el["slicing"] = value
            elif key in DOC_KEYS:
                el[key] = value
            else:
                raise ProfileError(f"{where}: {key} cannot be set by this generator")

    @staticmethod
    def cardinality(el: dict, diff: dict, where: str) -> None:
        def number(m: str) -> float:
            return float("inf") if m == "*" else int(m)
        lo, hi = diff.get("min", el["min"]), diff.get("max", el["max"])
        if lo < el["min"] or number(hi) > number(el["max"]) or lo > number(hi):
            raise ProfileError(f"{where}: {lo}..{hi} does not narrow {el['min']}..{el['max']}")
        el["min"], el["max"] = lo, hi

    def narrow_types(self, el: dict, wanted: list[dict], where: str) -> list[dict]:
        allowed = {type_code(t): t for t in el.get("type", [])}
        out = []
        for t in wanted:
            code = t["code"]
            base = allowed.get(code)
            if base is None and {"Resource", "DomainResource"} & set(allowed) and self.core.is_resource(code):
                base = {"code": code}
            if base is None:
                raise ProfileError(f"{where}: type {code} is not one of {sorted(allowed)}")
            for target in t.get("targetProfile", []):
                if not self.target_allowed(target, base.get("targetProfile", [CORE + "Resource"])):
                    raise ProfileError(f"{where}: target {target} is not allowed by {base.get('targetProfile')}")
            for profile in t.get("profile", []):
                if profile in self.types and self.types[profile] != code:
                    raise ProfileError(f"{where}: profile {profile} is not a {code}")
            out.append({**{k: v for k, v in base.items() if k not in ("profile", "targetProfile")}, **t})
        return out

    def target_allowed(self, target: str, allowed: list[str]) -> bool:
        resource = self.types.get(target) or target.removeprefix(CORE)
        names = {a.removeprefix(CORE) for a in allowed}
        return resource in names or "Resource" in names

    @staticmethod
    def fixed(el: dict, key: str, value, where: str) -> None:
        suffix = key[5:] if key.startswith("fixed") else key[7:]
        codes = {type_code(t) for t in el.get("type", [])}
        if len(codes) != 1 or suffix != next(iter(codes))[:1].upper() + next(iter(codes))[1:]:
            raise ProfileError(f"{where}: {key} does not match the element's type {sorted(codes)}")
        el[key] = value


# -- one profile ------------------------------------------------------------------------------------
def with_sugar(spec: dict, url: str) -> list[dict]:
    """The differential as written, plus what an extension definition always says."""
    diff = [dict(d) for d in spec["differential"]]
    if spec["type"] != "Extension":
        return diff
    by_id = {d["id"]: d for d in diff}

    def put(eid: str, **values) -> None:
        if eid not in by_id:
            by_id[eid] = {"id": eid}
            diff.append(by_id[eid])
        for k, v in values.items():
            by_id[eid].setdefault(k, v)

    put("Extension", short=spec["title"], definition=spec["description"])
    subs = [d for d in diff if re.fullmatch(r"Extension\.extension:[^.]+", d["id"])]
    for sub in subs:
        if not any(t.get("profile") for t in sub.get("type", [])):
            put(f"{sub['id']}.url", fixedUri=sub["id"].split(":", 1)[1])
    if subs:
        put("Extension.value[x]", max="0")
    put("Extension.url", fixedUri=url)
    return diff


def build_one(spec: dict, core: Core, types: dict[str, str], built: dict[str, dict], aliases: dict) -> dict:
    """One StructureDefinition: the differential merged onto the base snapshot, then the metadata."""
    spec = resolve(spec, aliases)
    url = canonical(spec)
    base_url = spec.get("baseDefinition", CORE + spec["type"])
    base_sd = built[base_url] if base_url in built else core.sd(base_url.removeprefix(CORE))
    if base_sd["type"] != spec["type"]:
        raise ProfileError(f"{spec['id']}: base {base_url} is not a {spec['type']}")
    snap = Snapshot(base_sd["snapshot"]["element"], url, core, types, built)
    explicit = [d["id"] for d in spec["differential"]]
    written: dict[str, dict] = {}
    for diff in with_sugar(spec, url):
        eid = diff["id"]
        diff = {"id": eid, "path": re.sub(r":[^.]+", "", eid), **diff}
        if eid in written:
            raise ProfileError(f"{spec['id']}: {eid} given twice")
        if re.search(r":[^.]+$", eid) and "sliceName" not in diff:
            raise ProfileError(f"{spec['id']}: {eid} declares a slice: give its sliceName")
        snap.apply(snap.ensure(eid, eid), diff)
        written[eid] = diff
    for eid, auto in snap.added.items():
        written[eid] = {**auto, **written.get(eid, {})}
    position = {e["id"]: i for i, e in enumerate(snap.elements)}
    for before, after in zip(explicit, explicit[1:], strict=False):
        if position[before] > position[after]:  # FHIR's rule; it also makes slices inherit predictably
            raise ProfileError(f"{spec['id']}: differential out of snapshot order: {after} before {before}")
    el_order = core.key_order("ElementDefinition")
    differential = [ordered(d, el_order) for d in sorted(written.values(), key=lambda d: position[d["id"]])]
    sd = {
        "resourceType": "StructureDefinition", "id": spec["id"], **({"meta": spec["meta"]} if "meta" in spec else {}),
        "url": url, "version": spec.get("version", version()), "name": spec["name"], "title": spec["title"],
        "status": spec.get("status", "draft"), "experimental": spec.get("experimental", False),
        "publisher": spec.get("publisher", "fhir-dmp"), "description": spec["description"],
        "jurisdiction": [{"coding": [{"system": "urn:iso:std:iso:3166", "code": "FR"}]}],
        **({"purpose": spec["purpose"]} if "purpose" in spec else {}),
        "fhirVersion": "4.0.1",
        "mapping": base_sd.get("mapping", []) + spec.get("mapping", []),
        "kind": base_sd["kind"], "abstract": False,
        **({"context": spec["context"]} if "context" in spec else {}),
        "type": spec["type"], "baseDefinition": base_url, "derivation": "constraint",
        "snapshot": {"element": [ordered(e, el_order) for e in snap.elements]},
        "differential": {"element": differential},
    }
    if not sd["mapping"]:
        del sd["mapping"]
    return ordered(sd, ["resourceType"] + core.key_order("StructureDefinition"))


@cache
def _core(package: Path) -> Core:
    return Core(package)  # read-only once loaded: the snapshot copies what it changes


@cache
def version() -> str:
    text = (ROOT / "fhir_dmp" / "version.py").read_text(encoding="utf-8")
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


def build_all(src: Path = SRC, package: Path = PACKAGE) -> dict[str, str]:
    """File name -> JSON text of every generated StructureDefinition (bases before the profiles on them)."""
    specs, aliases = load_sources(src)
    core = _core(package)
    types = {canonical(s): s["type"] for s in specs.values()}
    built: dict[str, dict] = {}
    pending = sorted(specs)
    while pending:
        ready = [p for p in pending if resolve(specs[p].get("baseDefinition", ""), aliases) not in
                 {canonical(specs[q]) for q in pending}]
        if not ready:
            raise ProfileError(f"circular baseDefinition among {pending}")
        for pid in ready:
            built[canonical(specs[pid])] = build_one(specs[pid], core, types, built, aliases)
            pending.remove(pid)
    return {f"StructureDefinition-{sd['id']}.json": json.dumps(sd, indent=2, ensure_ascii=False) + "\n"
            for sd in sorted(built.values(), key=lambda sd: sd["id"])}


def main(argv: list[str]) -> int:
    files = build_all()
    stale = [name for name, text in files.items()
             if not (OUT / name).exists() or (OUT / name).read_text(encoding="utf-8") != text]
    orphans = sorted({p.name for p in OUT.glob("StructureDefinition-*.json")} - set(files))
    if "--check" in argv:
        for name in stale + orphans:
            print(f"out of date: profiles/{name}")
        return 1 if stale or orphans else 0
    for name in stale:
        (OUT / name).write_text(files[name], encoding="utf-8")
    for name in orphans:
        (OUT / name).unlink()
    print(f"{len(files)} StructureDefinitions in profiles/: {len(stale)} written, {len(orphans)} removed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
