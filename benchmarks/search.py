"""Search benchmark (not a test): a realistic DMP data set, loaded through the API's own write path,
then the p50/p95/p99 latency of ten ITI-67 queries, and the database size.

    python benchmarks/search.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test \
        --patients 100000 --documents 1000000
    python benchmarks/search.py --patients 10000 --documents 100000     # SQLite file in benchmarks/out/

    python benchmarks/search.py --database-url ... --patients 2000 --documents 20000 --stale-statistics

Loading: transaction Bundles of `--bundle` documents posted through `Pipeline.handle` (validation,
index extraction, storage: everything a client's POST pays) from `--processes` processes, then ANALYZE (fresh
statistics; `--stale-statistics`: after the first tenth only, autovacuum off, then measured before and after a
final ANALYZE). Queries go
through the Flask app in-process (routing, parsing, SQL, JSON), without a network hop.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text  # noqa: E402

from fhir_dmp.config import Settings  # noqa: E402
from fhir_dmp.http.app import create_app  # noqa: E402
from fhir_dmp.policy.caller import Caller  # noqa: E402
from fhir_dmp.services.identity import mint_token  # noqa: E402
from fhir_dmp.services.pipeline import Pipeline  # noqa: E402
from fhir_dmp.services.requests import parse_url  # noqa: E402
from fhir_dmp.storage.db import Database  # noqa: E402
from fhir_dmp.storage.migrate import upgrade  # noqa: E402
from fhir_dmp.storage.tables import metadata  # noqa: E402

INS = "urn:oid:1.2.250.1.213.1.4.10"
RPPS = "urn:oid:1.2.250.1.71.4.2.1"
FAKE_SHA1 = "2jmj7l5rSw0yVb/vlWAYkK/YBwk="  # SHA-1 of nothing, base64: well formed
LOINC = "http://loinc.org"
A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
A08 = "https://mos.esante.gouv.fr/NOS/TRE_A08-HL7Confidentiality/FHIR/TRE-A08-HL7Confidentiality"
A07 = "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"
SYSTEM = Caller(actor="system", sub="benchmark")
BASE = "http://bench/fhir"
SECRET = "benchmark-secret-at-least-thirty-two-bytes"
# The DMP document types (ASS_X16's type -> class map), as the server ships them
TYPES_CSV = Path(__file__).resolve().parents[1] / "terminologies" / "dmp-document-types.csv"
# Frequent types get most of the documents, as in a real DMP.
FREQUENT = ["11488-4", "34112-3", "11490-0", "11502-2", "18748-4", "57833-6", "56445-0", "60591-5"]


def load_types() -> list[tuple[str, str, str]]:
    with TYPES_CSV.open(encoding="utf-8") as fh:
        rows = [(r["code"], r["class"], r.get("system") or LOINC) for r in csv.DictReader(fh)]
    return [r for r in rows if r[1]]


def ins(i: int) -> str:
    return f"2{i:014d}"


def practitioner_bundle(start: int, count: int) -> dict:
    entries = [{
        "resource": {"resourceType": "Practitioner", "identifier": [{"system": RPPS, "value": f"8{i:011d}"}],
                     "name": [{"family": f"MEDECIN{i}", "given": ["Jean"]}]},
        "request": {"method": "POST", "url": "Practitioner"},
    } for i in range(start, start + count)]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def patient_bundle(first: int, count: int, docs_per_patient: int, practitioners: list[str],
                   types: list[tuple[str, str, str]], rng: random.Random) -> dict:
    entries = []
    frequent = [t for t in types if t[0] in FREQUENT]
    for i in range(first, first + count):
        full = f"urn:uuid:{uuid.uuid4()}"
        entries.append({"fullUrl": full, "resource": {
            "resourceType": "Patient", "identifier": [{"system": INS, "value": ins(i)}],
            "name": [{"family": f"NOM{i}", "given": ["Prénom"]}], "gender": rng.choice(["male", "female"]),
            "birthDate": f"{rng.randint(1930, 2020)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"},
            "request": {"method": "POST", "url": "Patient"}})
        for _ in range(docs_per_patient):
            code, klass, system = rng.choice(frequent) if rng.random() < 0.8 else rng.choice(types)
            year, month, day = rng.randint(2016, 2026), rng.randint(1, 12), rng.randint(1, 28)
            labels = [{"system": A08, "code": rng.choice("NNNNNNRV")}]
            if rng.random() < 0.05:
                labels.append({"system": A07, "code": rng.choice(["MASQUE_PS", "INVISIBLE_PATIENT"])})
            entries.append({"resource": {
                "resourceType": "DocumentReference",
                "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
                "identifier": [{"use": "official", "system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"}],
                "status": rng.choices(["current", "superseded", "entered-in-error"], [90, 8, 2])[0],
                "type": {"coding": [{"system": system, "code": code}]},
                "category": [{"coding": [{"system": A03, "code": klass}]}],
                "subject": {"reference": full},
                "date": f"{year}-{month:02d}-{day:02d}T{rng.randint(7, 19):02d}:{rng.randint(0, 59):02d}:00+01:00",
                "author": [{"reference": f"Practitioner/{rng.choice(practitioners)}"}],
                "custodian": {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": f"{i % 997:09d}"}},
                "securityLabel": [{"coding": [label]} for label in labels],
                # the bytes are kept by the producer here (a url of its own): their size and hash are not checked
                "content": [{"attachment": {"contentType": "application/pdf",
                                            "url": f"https://documents.producteur.test/{uuid.uuid4()}.pdf",
                                            "size": rng.randint(1000, 100000), "hash": FAKE_SHA1,
                                            "title": "Document"}}],
                "context": {"period": {"start": f"{year}-{month:02d}-{day:02d}"}},
            }, "request": {"method": "POST", "url": "DocumentReference"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _worker(args: tuple) -> int:
    url, first, count, docs, practitioners, seed, per_bundle = args
    rng = random.Random(seed)
    db = Database(url)
    service = Pipeline.load(db, Settings(database_url=url))
    types = load_types()
    written = 0
    for start in range(first, first + count, per_bundle):
        n = min(per_bundle, first + count - start)
        bundle = patient_bundle(start, n, docs, practitioners, types, rng)
        result = service.handle(SYSTEM, parse_url("POST", "", body=bundle, base_url=BASE))
        assert result.status == 200, result.body
        written += n * docs
    db.dispose()
    return written


def load(url: str, patients: int, documents: int, processes: int, per_bundle: int, stale: bool = False) -> list[str]:
    """Load, then ANALYZE (fresh statistics, as autovacuum would eventually give). `stale`: autovacuum off, ANALYZE
    after the first tenth only, so the planner sees a tenth of the rows (the statistics of a store that grew fast)."""
    db = Database(url)
    upgrade(db)
    service = Pipeline.load(db, Settings(database_url=url))
    n_pract = max(10, patients // 20)
    result = service.handle(SYSTEM, parse_url("POST", "", body=practitioner_bundle(0, n_pract), base_url=BASE))
    practitioners = [e["response"]["location"].split("/")[-3] for e in result.body["entry"]]
    docs = max(1, documents // patients)
    if stale and not db.is_sqlite:
        with db.engine.begin() as conn:
            for table in metadata.sorted_tables:
                conn.execute(text(f"ALTER TABLE {table.name} SET (autovacuum_enabled = false)"))
    started = time.perf_counter()
    written = 0
    first = patients // 10 if stale else patients
    for start, count in ((0, first), (first, patients - first)):
        if count <= 0:
            continue
        chunk = (count + processes - 1) // processes
        jobs = [(url, start + p * chunk, min(chunk, count - p * chunk), docs, practitioners, p + start, per_bundle)
                for p in range(processes) if p * chunk < count]
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            written += sum(pool.map(_worker, jobs))
        if start == 0:
            analyze(db)
            print(f"ANALYZE after {start + count} patients" + (" (then no more: stale statistics)" if stale else ""))
    elapsed = time.perf_counter() - started
    print(f"loaded {written} DocumentReferences + {patients} Patients in {elapsed:.1f} s: "
          f"{written / elapsed:.0f} DocumentReferences/s ({(written + patients) / elapsed:.0f} resources/s)")
    db.dispose()
    return practitioners


def analyze(db: Database) -> None:
    with db.engine.begin() as conn:
        conn.execute(text("ANALYZE"))


def queries(patient_id: str, patient_ins: str, practitioner: str) -> list[tuple[str, str]]:
    p = patient_id
    return [
        ("patient+status", f"DocumentReference?patient={p}&status=current"),
        ("patient+status+type", f"DocumentReference?patient={p}&status=current&type={LOINC}|11488-4"),
        ("patient.identifier chain", f"DocumentReference?patient.identifier={INS}|{patient_ins}&status=current"),
        ("patient+date range", f"DocumentReference?patient={p}&date=ge2020-01-01&date=lt2024-01-01"),
        ("_include author", f"DocumentReference?patient={p}&_include=DocumentReference:author"),
        ("_sort=-date", f"DocumentReference?patient={p}&_sort=-date&_count=10"),
        ("_revinclude subject", f"Patient?identifier={INS}|{patient_ins}&_revinclude=DocumentReference:subject"),
        ("class+period", f"DocumentReference?patient={p}&category={A03}|10&period-start=ge2019"),
        ("security-label", f"DocumentReference?patient={p}&security-label={A08}|N"),
        ("status, first page+total", f"DocumentReference?patient={p}&status=current&_count=5&_total=accurate"),
        ("author.identifier chain", f"DocumentReference?patient={p}&author.identifier={RPPS}|{practitioner}"),
    ]


def measure(url: str, patients: int, rounds: int) -> dict[str, float]:
    """The p50/p95/p99 of each query over `rounds` patients drawn at random; returns the p50s."""
    db = Database(url)
    app = create_app(Settings(database_url=url, jwt_secret=SECRET), database=db)
    client = app.test_client()
    token = mint_token({"actor": "system", "sub": "bench"}, secret=SECRET, ttl_seconds=86400)
    headers = {"Authorization": f"Bearer {token}"}
    rng = random.Random(42)
    timings: dict[str, list[float]] = {}
    for _ in range(rounds):
        i = rng.randrange(patients)
        found = client.get(f"/fhir/Patient?identifier={INS}|{ins(i)}", headers=headers).get_json()
        pid = found["entry"][0]["resource"]["id"]
        practitioner = f"8{rng.randrange(max(10, patients // 20)):011d}"
        for name, query in queries(pid, ins(i), practitioner):
            started = time.perf_counter()
            response = client.get(f"/fhir/{query}", headers=headers)
            timings.setdefault(name, []).append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (query, response.get_json())
    print(f"{'query':28} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}   ({rounds} patients drawn at random)")
    for name, values in timings.items():
        q = statistics.quantiles(values, n=100)
        print(f"{name:28} {statistics.median(values):8.2f} {q[94]:8.2f} {q[98]:8.2f}")
    print(f"database size: {int(database_size(db)) / 1e6:.0f} MB")
    db.dispose()
    p50 = {name: statistics.median(values) for name, values in timings.items()}
    chain, key = p50["patient.identifier chain"], p50["patient+status"]
    print(f"chain / patient= (same query): {chain:.2f} / {key:.2f} ms = {chain / key:.2f}x")
    return p50


def database_size(db: Database) -> int:
    with db.engine.connect() as conn:
        if db.is_sqlite:
            return os.path.getsize(db.engine.url.database or "")
        return conn.execute(text("SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                                 "JOIN pg_namespace n ON n.oid = c.relnamespace "
                                 "WHERE n.nspname = current_schema() AND c.relkind = 'r'")).scalar_one()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--patients", type=int, default=10000)
    parser.add_argument("--documents", type=int, default=100000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--bundle", type=int, default=10, help="patients per transaction Bundle")
    parser.add_argument("--rounds", type=int, default=200, help="patients drawn for the queries")
    parser.add_argument("--skip-load", action="store_true", help="measure an already loaded database")
    parser.add_argument("--stale-statistics", action="store_true",
                        help="PostgreSQL: autovacuum off and ANALYZE after the first tenth of the load only; measure, "
                             "then ANALYZE and measure again")
    args = parser.parse_args()
    url = args.database_url
    if url is None:
        out = Path(__file__).resolve().parent / "out"
        out.mkdir(exist_ok=True)
        url = f"sqlite:///{out / 'search.db'}"
        if not args.skip_load and (out / "search.db").exists():
            (out / "search.db").unlink()
    print(f"store: {url.split('@')[-1]}; {args.patients} patients, {args.documents} documents")
    if not args.skip_load:
        load(url, args.patients, args.documents, args.processes, args.bundle, stale=args.stale_statistics)
    if args.stale_statistics:
        print("-- stale statistics (ANALYZE saw a tenth of the rows)")
        measure(url, args.patients, args.rounds)
        db = Database(url)
        analyze(db)
        db.dispose()
        print("-- fresh statistics (ANALYZE again)")
    measure(url, args.patients, args.rounds)


if __name__ == "__main__":
    main()
