"""`fhir-dmp import`: NDJSON files (one resource a line, gzip or not) into the store through the API's own write
pipeline, as the system caller, in batches, resumable.

Each batch of lines is one unit of work (`Pipeline.run`: one transaction, traced, the pipeline's hooks): which of
its resources are already stored is asked in one statement (`resources.already_stored`), then each new one is
parsed, conformed and prepared (`writes.conform`, `writes.prepare_new`: the API's validation and policy) and the
batch stored with `writes.insert` (one statement on PostgreSQL). A line that fails is reported with its number and
the first issue, and left out; the rest of its batch is stored. A transaction Bundle line runs as the API runs it.

Resuming after a crash is running the same import again: a committed batch is all there, a batch that was not is
not there at all, and what is there is skipped. A resource is "there" when its id is taken (ids are derived from
the line's content: `content_id`) or when a current resource holds one of its business identifiers (a Patient's
INS; any other type's `identifier` / `masterIdentifier`): so what the API stored before is skipped too.
"""

from __future__ import annotations

import gzip
import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from fhir_dmp import fhirjson
from fhir_dmp.config import Settings
from fhir_dmp.errors import FhirError, bad_request
from fhir_dmp.policy.caller import Caller
from fhir_dmp.policy.consents import INS_SYSTEMS
from fhir_dmp.services import content, validating, writes
from fhir_dmp.services.bundles import NeedsStore, bytes_at_hand
from fhir_dmp.services.pipeline import Pipeline
from fhir_dmp.services.registry import RESOURCES
from fhir_dmp.services.requests import FhirRequest, FhirResponse, parse_url
from fhir_dmp.services.unit import Unit
from fhir_dmp.storage import bulk, resources
from fhir_dmp.storage.db import Database
from fhir_dmp.storage.records import NewResource

IMPORTER = Caller("system", "fhir-dmp import")
BATCH = 200  # resources per unit of work: one existence check, one insert statement, one trace per DMP
_IDS = uuid.UUID("5b0d7c1e-4f4a-4c36-9d65-2f1d3c7e8a90")  # the namespace of content-derived ids


@dataclass(frozen=True)
class Line:
    file: str
    number: int
    text: bytes


@dataclass
class Report:
    """What an import did: JSON for the command's last line."""

    files: list[str] = field(default_factory=list)
    read: int = 0
    created: int = 0
    skipped: int = 0
    refused: list[dict] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def refuse(self, line: Line, error: FhirError) -> None:
        issue = error.issues[0] if error.issues else None
        self.refused.append({"file": line.file, "line": line.number, "status": error.status,
                             "issue": issue.diagnostics if issue else ""})

    def as_json(self) -> dict:
        elapsed = time.monotonic() - self.started
        return {"files": self.files, "read": self.read, "created": self.created, "skipped": self.skipped,
                "refused": len(self.refused), "elapsed_s": round(elapsed, 3),
                "rate_per_s": round(self.read / elapsed, 1) if elapsed > 0 else None,
                "refusals": sorted(self.refused, key=lambda r: (r["file"], r["line"]))}


@dataclass
class _Candidate:
    line: Line
    body: dict
    rtype: str
    rid: str
    identifiers: tuple[tuple[str, str, str], ...]
    verdict: FhirError | bool  # judged before the unit of work: its refusal, True (fine), False (judged in it)


def open_lines(path: Path) -> Iterator[bytes]:
    """The file's lines, gunzipped when it is gzip (by its magic number, whatever its name)."""
    with path.open("rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
    with (gzip.open(path, "rb") if gz else path.open("rb")) as fh:
        yield from fh


def count_lines(paths: Iterable[Path]) -> int:
    """Non-blank lines (the progress bar's total: one pass, nothing parsed)."""
    return sum(1 for path in paths for text in open_lines(path) if text.strip())


def read_lines(paths: Iterable[Path]) -> Iterator[Line]:
    for path in paths:
        for number, text in enumerate(open_lines(path), 1):
            if text.strip():
                yield Line(path.name, number, text)


def content_id(rtype: str, body: dict) -> str:
    """The id a line's resource gets: a UUID of its content (its own `id` aside), so that importing the same
    line again finds it taken."""
    canonical = json.dumps({k: v for k, v in body.items() if k != "id"}, sort_keys=True, ensure_ascii=False,
                           separators=(",", ":"))
    return str(uuid.uuid5(_IDS, f"{rtype}\n{canonical}"))


def business_identifiers(rtype: str, body: dict) -> tuple[tuple[str, str, str], ...]:
    """(type, system, value) of what names this resource outside the server: a Patient's INS, another type's
    `masterIdentifier` and `identifier` (those the `identifier` search parameter indexes)."""
    found = body.get("identifier")
    idents = [i for i in (found if isinstance(found, list) else [found]) if isinstance(i, dict)]
    if rtype == "Patient":
        idents = [i for i in idents if i.get("system") in INS_SYSTEMS]
    elif isinstance(body.get("masterIdentifier"), dict):
        idents.append(body["masterIdentifier"])
    return tuple(sorted({(rtype, i["system"], i["value"]) for i in idents
                         if isinstance(i.get("system"), str) and isinstance(i.get("value"), str) and i["value"]}))


class Importer:
    """One import run: its pipeline, its report; `run` feeds it files."""

    def __init__(self, db: Database, settings: Settings, base_url: str = "http://localhost:8080/fhir",
                 batch: int = BATCH) -> None:
        self.pipeline = Pipeline.load(db, settings)
        self.base_url = base_url.rstrip("/")
        self.batch = max(1, batch)
        self.report = Report()
        self.pipeline.admit(IMPORTER, FhirRequest("POST", base_url=self.base_url))

    def run(self, paths: list[Path], advance: Callable[[int], None] = lambda _n: None) -> Report:
        self.report.files += [str(p) for p in paths]
        lines = read_lines(paths)
        while chunk := list(islice(lines, self.batch)):
            self.import_lines(chunk)
            advance(len(chunk))
        return self.report

    def import_lines(self, lines: list[Line]) -> None:
        """A batch of lines (one unit of work for its resources, one for each transaction Bundle), into the report."""
        pending: list[_Candidate] = []
        for line in lines:
            self.report.read += 1
            try:
                body = fhirjson.loads(line.text)
                rtype = body.get("resourceType") if isinstance(body, dict) else None
                if not isinstance(rtype, str) or not rtype:
                    raise bad_request("The line is not a FHIR resource (a JSON object with a resourceType)")
                if rtype == "Bundle":
                    self._store(pending)  # in file order: the Bundle may name what the lines before it created
                    pending = []
                    self._bundle(line, body)
                    continue
                parse_url("POST", rtype)  # 404 for a type this server does not serve
            except FhirError as error:
                self.report.refuse(line, error)
                continue
            except ValueError as exc:
                self.report.refuse(line, bad_request(f"The line is not JSON: {exc}"))
                continue
            pending.append(_Candidate(line, body, rtype, content_id(rtype, body), business_identifiers(rtype, body),
                                      self._judged(body, rtype)))
        self._store(pending)

    # -- resources --------------------------------------------------------------------------------------------
    def _store(self, batch: list[_Candidate]) -> None:
        """The batch in one unit of work; should the unit itself fail (not a line: the statement, the trace),
        each half is tried on its own, down to the line to blame."""
        if not batch:
            return
        outcome: dict[int, FhirError | str] = {}

        def work(u: Unit) -> FhirResponse:
            outcome.clear()  # a unit run again after a concurrent writer starts from nothing
            taken, held = resources.already_stored(u.tx, [(c.rtype, c.rid) for c in batch],
                                                   [i for c in batch for i in c.identifiers])
            pending: dict[tuple[str, str], str] = {}
            # Patients first, stored before the rest: a document may name its DMP by INS (a lookup in the store)
            numbered = list(enumerate(batch))
            for group in ([(n, c) for n, c in numbered if c.rtype == "Patient"],
                          [(n, c) for n, c in numbered if c.rtype != "Patient"]):
                news: list[NewResource] = []
                _know_patients(u, [c for _, c in group if c.rtype != "Patient"])
                for n, cand in group:
                    if (cand.rtype, cand.rid) in taken or any(i in held for i in cand.identifiers):
                        outcome[n] = "skipped"
                        continue
                    try:
                        news.append(self._prepare(u, cand, pending))
                    except FhirError as error:
                        outcome[n] = error
                        continue
                    outcome[n] = "created"
                    taken.add((cand.rtype, cand.rid))
                    held.update(cand.identifiers)
                writes.insert(u, news)
            return FhirResponse(200)

        try:
            self.pipeline.run(IMPORTER, FhirRequest("POST", base_url=self.base_url), work)
        except Exception as exc:  # noqa: BLE001 - the unit failed as a whole: find the line to blame
            if len(batch) > 1:
                half = len(batch) // 2
                self._store(batch[:half])
                self._store(batch[half:])
                return
            error = exc if isinstance(exc, FhirError) else FhirError.of(
                500, "exception", f"The resource could not be stored: {type(exc).__name__}: "
                f"{(str(exc).strip().splitlines() or [''])[0]}")
            self.report.refuse(batch[0].line, error)
            return
        for n, result in sorted(outcome.items()):
            if isinstance(result, FhirError):
                self.report.refuse(batch[n].line, result)
            elif result == "created":
                self.report.created += 1
            else:
                self.report.skipped += 1

    def _judged(self, body: dict, rtype: str) -> FhirError | bool:
        """What `writes.parsed` and `writes.conform` say (one 422 with the R4 issues and, with them, the profiles'
        and DMP rules' errors), before the unit of work opens its transaction (which then holds only what needs
        the database): the refusal; True when fine; False when an attachment names a stored Binary, which only
        the unit of work can read. Applied in the unit (`_prepare`), so that a line already stored is skipped
        whatever it says, as before."""
        conf, enforce = self.pipeline.rt.conformance, self.pipeline.rt.settings.enforce_profiles
        try:
            resource = content.as_resource(body, rtype)
            issues = validating.r4_issues(conf, resource)
            if issues:
                if enforce:
                    seen = {(i.code, i.expression) for i in issues}
                    issues += [i for i in validating.conformity_issues(conf, resource, bytes_at_hand(self.base_url))
                               if (i.code, i.expression) not in seen]
                raise FhirError(422, issues)
            if enforce:
                validating.enforce(conf, resource, bytes_at_hand(self.base_url))
        except NeedsStore:
            return False
        except FhirError as error:
            return error
        return True

    def _prepare(self, u: Unit, cand: _Candidate, pending: dict[tuple[str, str], str]) -> NewResource:
        """Decide and index one create (judged by `_judged`), as the API does; a refusal leaves nothing in the
        trace."""
        before = {key: len(t.references) for key, t in u.touched.items()}
        try:
            if isinstance(cand.verdict, FhirError):
                raise cand.verdict
            body = cand.body
            if cand.verdict is False:  # an attachment names a stored Binary: judged here, as the API judges
                body = writes.parsed(u, body, cand.rtype)
                writes.conform(u, body)
            req = FhirRequest("POST", cand.rtype, base_url=self.base_url)
            new, _ = writes.prepare_new(u, req, body, cand.rid, pending)
        except FhirError:
            for key in list(u.touched):
                if key not in before:
                    del u.touched[key]
                else:
                    del u.touched[key].references[before[key]:]
            raise
        pending[(new.resource_type, new.id)] = new.patient_key
        return new

    # -- transaction Bundles ----------------------------------------------------------------------------------
    def _bundle(self, line: Line, bundle: dict) -> None:
        """A transaction Bundle, run as the API runs it; skipped when each of its creates carries a business
        identifier already stored (a committed transaction is there whole)."""
        try:
            if bundle.get("type") != "transaction":
                raise bad_request(f"A Bundle line must be a transaction, not {bundle.get('type')!r}", "Bundle.type")
            creates = [e["resource"] for e in bundle.get("entry") or [] if isinstance(e, dict)
                       and isinstance(e.get("resource"), dict) and isinstance(e.get("request"), dict)
                       and e["request"].get("method") == "POST"]
            idents = [business_identifiers(str(r.get("resourceType")), r) for r in creates]
            if creates and all(idents):
                with self.pipeline.rt.db.transaction() as tx:
                    _, held = resources.already_stored(tx, [], [i for group in idents for i in group])
                if all(any(i in held for i in group) for group in idents):
                    self.report.skipped += len(creates)
                    return
            req = parse_url("POST", "", body=bundle, base_url=self.base_url)
            response = self.pipeline.handle(IMPORTER, req)
        except FhirError as error:
            self.report.refuse(line, error)
            return
        entries = response.body.get("entry", []) if isinstance(response.body, dict) else []
        self.report.created += sum(1 for e in entries if str(e.get("response", {}).get("status", "")).startswith("201"))


def _know_patients(u: Unit, batch: list[_Candidate]) -> None:
    """The DMPs a batch's resources name by INS, and their facts, in one statement (the lookups and decisions that
    follow read them from the unit instead of asking the database once per resource)."""
    wanted = []
    for cand in batch:
        definition = RESOURCES.get(cand.rtype)
        for path in definition.patient_paths if definition else ():
            ref = cand.body.get(path)
            ident = ref.get("identifier") if isinstance(ref, dict) and "reference" not in ref else None
            if isinstance(ident, dict) and ident.get("system") in INS_SYSTEMS and isinstance(ident.get("value"), str):
                wanted.append((ident["system"], ident["value"]))
    for pair, matches in bulk.patients_by_identifier(u.tx, wanted).items():
        if len(matches) == 1 and matches[0][0] not in u.changed_dmps:
            pid, facts = matches[0]
            u.found_ins[pair] = pid
            u.know_facts(pid, facts)
