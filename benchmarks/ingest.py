"""Ingest benchmark (not a test): the API's bulk rate against the raw floor of the same server.

    python benchmarks/ingest.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench \
        --patients 1000 --documents 10000

In one run, on one PostgreSQL server, in a schema of its own (`bench_ingest`, dropped first):

1. API bulk: an NDJSON file of `--patients` Patients and `--documents` DocumentReferences (naming their DMP by
   INS) imported by `fhir-dmp import`'s code (`services/importing.py`: the API's validation and policy, as the
   system caller, `--batch` resources per unit of work, traced), with each of `--workers` processes
   (`services/parallel_import.py`), each on an empty schema;
2. the floor: the same JSON texts COPYed into a plain table (`raw_copy (content text)`, no index), and inserted
   with psycopg's `executemany` into another (`raw_insert`): what the server itself costs, with no validation,
   no index rows, no versions, no traces.

It prints each rate and the API's share of the floor. It writes its file under benchmarks/out/ and reads nothing
outside the repository.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from fhir_dmp.config import Settings  # noqa: E402
from fhir_dmp.services import parallel_import  # noqa: E402
from fhir_dmp.services.importing import Importer  # noqa: E402
from fhir_dmp.storage.db import Database  # noqa: E402
from fhir_dmp.storage.migrate import upgrade  # noqa: E402

INS = "urn:oid:1.2.250.1.213.1.4.10"
RPPS = "urn:oid:1.2.250.1.71.4.2.1"
FAKE_SHA1 = "2jmj7l5rSw0yVb/vlWAYkK/YBwk="
A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
A08 = "https://mos.esante.gouv.fr/NOS/TRE_A08-HL7Confidentiality/FHIR/TRE-A08-HL7Confidentiality"
SCHEMA = "bench_ingest"
REPORTS = (("11488-4", "10"), ("34112-3", "10"), ("11502-2", "10"), ("18748-4", "31"))  # (type, ASS_X16 class)


def ins(i: int) -> str:
    return f"2{i:014d}"


def lines(patients: int, documents: int, rng: random.Random) -> list[str]:
    """The Patients, then the documents spread over them (each naming its DMP by INS)."""
    out = [json.dumps({"resourceType": "Patient", "identifier": [{"system": INS, "value": ins(i)}],
                       "name": [{"family": f"NOM{i}", "given": ["Prénom"]}], "gender": rng.choice(["male", "female"]),
                       "birthDate": f"{rng.randint(1930, 2020)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"},
                      ensure_ascii=False) for i in range(patients)]
    for d in range(documents):
        code, klass = rng.choice(REPORTS)
        day = f"{rng.randint(2016, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        out.append(json.dumps({
            "resourceType": "DocumentReference",
            "masterIdentifier": {"system": "urn:ietf:rfc:3986",
                                 "value": f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128))}"},
            "identifier": [{"use": "official", "system": "urn:ietf:rfc:3986", "value": f"urn:oid:1.2.250.1.999.1.{d}"}],
            "status": "current", "type": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "category": [{"coding": [{"system": A03, "code": klass}]}],
            "subject": {"identifier": {"system": INS, "value": ins(d % patients)}},
            "date": f"{day}T10:00:00+01:00",
            "author": [{"identifier": {"system": RPPS, "value": f"8{d % 97:011d}"}}],
            "custodian": {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "1750000000"}},
            "securityLabel": [{"coding": [{"system": A08, "code": "N"}]}],
            "content": [{"attachment": {"contentType": "application/pdf", "size": rng.randint(1000, 100000),
                                        "url": f"https://ged.chu-bench.fr/documents/{d}.pdf", "hash": FAKE_SHA1,
                                        "title": "Document"}}],
            "context": {"period": {"start": day}}}, ensure_ascii=False))
    return out


def in_schema(url: str) -> str:
    parsed = make_url(url)
    return parsed.update_query_dict({"options": f"-csearch_path={SCHEMA}"}).render_as_string(hide_password=False)


def floor(db: Database, texts: list[str]) -> tuple[float, float]:
    """Seconds to COPY the texts into a plain table, and to insert them with executemany into another."""
    raw = db.engine.raw_connection()
    try:
        pg = raw.driver_connection
        with pg.cursor() as cur:
            cur.execute("CREATE TABLE raw_copy (content text)")
            cur.execute("CREATE TABLE raw_insert (content text)")
        pg.commit()
        started = time.perf_counter()
        with pg.cursor() as cur, cur.copy("COPY raw_copy (content) FROM STDIN") as copy:
            for line in texts:
                copy.write_row((line,))
        pg.commit()
        copied = time.perf_counter() - started
        started = time.perf_counter()
        with pg.cursor() as cur:
            cur.executemany("INSERT INTO raw_insert (content) VALUES (%s)", [(line,) for line in texts])
        pg.commit()
        return copied, time.perf_counter() - started
    finally:
        raw.close()


def fresh_schema(url: str) -> Database:
    admin = Database(url)
    with admin.engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {SCHEMA}"))
    admin.dispose()
    db = Database(in_schema(url))
    upgrade(db)
    return db


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True, help="PostgreSQL (the floor is COPY)")
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument("--documents", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=200, help="resources per unit of work")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="import processes (`fhir-dmp import --workers`), each count on an empty schema")
    args = parser.parse_args()
    texts = lines(args.patients, args.documents, random.Random(7))
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(exist_ok=True)
    path = out / "ingest.ndjson"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    size = path.stat().st_size
    url = in_schema(args.database_url)
    print(f"store: {url.split('@')[-1]}; {args.patients} Patients + {args.documents} DocumentReferences, "
          f"{size / 1e6:.1f} MB of NDJSON, batches of {args.batch}")
    n = len(texts)
    rates = {}
    for workers in args.workers:
        db = fresh_schema(args.database_url)
        settings = Settings(database_url=url)
        started = time.perf_counter()
        if workers > 1:
            report = parallel_import.run(db, settings, "http://bench/fhir", args.batch, [path], workers).as_json()
        else:
            report = Importer(db, settings, "http://bench/fhir", args.batch).run([path]).as_json()
        rates[workers] = time.perf_counter() - started
        assert report["created"] == n and not report["refused"], {k: v for k, v in report.items()
                                                                  if k != "refusals"}
        db.dispose()
    db = fresh_schema(args.database_url)
    copied, inserted = floor(db, texts)
    db.dispose()
    for workers, api in rates.items():
        print(f"API bulk (fhir-dmp import --workers {workers}): {n} resources in {api:7.2f} s: "
              f"{n / api:9.0f} resources/s")
    print(f"COPY into a plain table:     {n} rows      in {copied:7.2f} s: {n / copied:9.0f} rows/s")
    print(f"executemany INSERT:          {n} rows      in {inserted:7.2f} s: {n / inserted:9.0f} rows/s")
    for workers, api in rates.items():
        print(f"--workers {workers}: API / COPY floor: {copied / api:.4f} ({api / copied:.0f}x slower); "
              f"API / executemany: {inserted / api:.4f} ({api / inserted:.0f}x slower)")


if __name__ == "__main__":
    main()
