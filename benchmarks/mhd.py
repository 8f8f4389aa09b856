"""MHD throughput (not a test): ITI-65 Provide Document Bundle in documents/s, then ITI-68 Retrieve Document
in MB/s, through the Flask app in-process (routing, token, parsing, profile validation, hashing, SQL, JSON;
no network hop).

    python benchmarks/mhd.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/fhir_dmp_mhd \
        --bundles 40 --processes 1 2 [--prefer-minimal]

Each ITI-65 is a transaction of one SubmissionSet List, 10 DocumentReferences and their 10 Binaries (random
bytes, 1 KB to 100 KB each, so 50 KB on average), linked by urn:uuid, posted by a médecin who created the
DMP (so authorised, 6.3): every entry is checked against its profile and every attachment's size and SHA-1
against its Binary. `--prefer-minimal` sends them with `Prefer: return=minimal`, as an MHD Document Source that
needs no echo of its resources would (the header line says which). ITI-68 then reads every Binary back as raw
bytes (`Accept: */*`) by the same médecin, and checks the SHA-1 of what it got.

On PostgreSQL it ends with the floor of the same run: the same Bundles' resources (their JSON texts) COPYed by one
process into a plain table (`mhd_floor`, no index, bodies compressed as the server's; dropped after), one transaction
per Bundle: what the server's storage alone costs, with no parsing, validation, policy, index rows or trace.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import multiprocessing
import random
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text  # noqa: E402

from fhir_dmp.config import Settings  # noqa: E402
from fhir_dmp.http.app import create_app  # noqa: E402
from fhir_dmp.services.identity import mint_token  # noqa: E402
from fhir_dmp.storage.db import Database  # noqa: E402
from fhir_dmp.storage.migrate import upgrade  # noqa: E402
from fhir_dmp.terminology.store import load  # noqa: E402
from fhir_dmp.validation.documents import class_of_types  # noqa: E402

SECRET = "benchmark-secret-at-least-thirty-two-bytes"
INS = "urn:oid:1.2.250.1.213.1.4.10"
RPPS = "urn:oid:1.2.250.1.71.4.2.1"
A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
A08 = "https://mos.esante.gouv.fr/NOS/TRE_A08-HL7Confidentiality/FHIR/TRE-A08-HL7Confidentiality"
MHD = "https://profiles.ihe.net/ITI/MHD"
DOCTOR = {"actor": "professional", "sub": "899900000001", "profession": "10", "specialty": "SM26"}
REPORTS = ("11488-4", "34112-3", "11502-2", "18748-4", "57833-6")  # consultation, hospital, lab, imaging, Rx
PER_BUNDLE = 10
CLASSES = class_of_types(load(Path(__file__).resolve().parents[1]))


def headers(accept: str = "application/fhir+json", prefer: str | None = None) -> dict[str, str]:
    token = mint_token(DOCTOR, secret=SECRET, ttl_seconds=86400)
    out = {"Authorization": f"Bearer {token}", "Accept": accept, "Content-Type": "application/fhir+json"}
    if prefer:
        out["Prefer"] = prefer
    return out


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def iti65(patient_id: str, rng: random.Random, sizes: tuple[int, int] = (1, 100)) -> tuple[dict, int]:
    """An ITI-65 Bundle of PER_BUNDLE documents, and its bytes of documents."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    docs, binaries, total = [], [], 0
    for _ in range(PER_BUNDLE):
        raw = rng.randbytes(rng.randint(sizes[0] * 1024, sizes[1] * 1024))
        total += len(raw)
        code = rng.choice(REPORTS)
        klass = CLASSES[("http://loinc.org", code)]
        doc_url, bin_url = urn(), urn()
        binaries.append({"fullUrl": bin_url, "request": {"method": "POST", "url": "Binary"}, "resource": {
            "resourceType": "Binary", "contentType": "application/pdf", "securityContext": {"reference": doc_url},
            "data": base64.b64encode(raw).decode()}})
        docs.append({"fullUrl": doc_url, "request": {"method": "POST", "url": "DocumentReference"}, "resource": {
            "resourceType": "DocumentReference",
            "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:1.2.250.1.999.1.{uuid.uuid4().int}"},
            "identifier": [{"use": "official", "system": "urn:ietf:rfc:3986", "value": urn()}],
            "status": "current", "type": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "category": [{"coding": [{"system": A03, "code": klass}]}],
            "subject": {"reference": f"Patient/{patient_id}"}, "date": now,
            "author": [{"identifier": {"system": RPPS, "value": DOCTOR["sub"]}}],
            "custodian": {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "1750000000"}},
            "securityLabel": [{"coding": [{"system": A08, "code": "N"}]}],
            "content": [{"attachment": {"contentType": "application/pdf", "url": bin_url, "size": len(raw),
                                        "hash": base64.b64encode(hashlib.sha1(raw).digest()).decode(),  # noqa: S324
                                        "title": "Document"}}],
            "context": {"period": {"start": now}}}})
    submission = {"fullUrl": urn(), "request": {"method": "POST", "url": "List"}, "resource": {
        "resourceType": "List",
        "extension": [
            {"url": f"{MHD}/StructureDefinition/ihe-designationType",
             "valueCodeableConcept": {"coding": [{"system": A03, "code": "10"}]}},
            {"url": f"{MHD}/StructureDefinition/ihe-sourceId",
             "valueIdentifier": {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.250.1.999.2"}}],
        "identifier": [{"use": "usual", "system": "urn:ietf:rfc:3986",
                        "value": f"urn:oid:1.2.250.1.999.2.{uuid.uuid4().int}"},
                       {"use": "official", "system": "urn:ietf:rfc:3986", "value": urn()}],
        "status": "current", "mode": "working",
        "code": {"coding": [{"system": f"{MHD}/CodeSystem/MHDlistTypes", "code": "submissionset"}]},
        "subject": {"reference": f"Patient/{patient_id}"}, "date": now,
        "source": {"identifier": {"system": RPPS, "value": DOCTOR["sub"]}},
        "entry": [{"item": {"reference": d["fullUrl"]}} for d in docs]}}
    return {"resourceType": "Bundle", "type": "transaction", "entry": [submission, *docs, *binaries]}, total


def _worker(args: tuple[str, int, int, tuple[int, int], str | None]) -> tuple[int, int, float, list[tuple[str, str]]]:
    """Posts `bundles` ITI-65s into one new DMP; returns documents, bytes, seconds, the Binaries' ids."""
    url, seed, bundles, sizes, prefer = args
    db = Database(url)
    client = create_app(Settings(database_url=url, jwt_secret=SECRET), database=db).test_client()
    rng = random.Random(seed)
    ins = f"1{rng.randrange(10**11, 10**12)}{seed % 10}"
    patient = {"resourceType": "Patient", "identifier": [{"system": INS, "value": ins}],
               "name": [{"family": "BENCH", "given": ["Mhd"]}], "gender": "female", "birthDate": "1970-01-01"}
    created = client.post("/fhir/Patient", json=patient, headers=headers())
    assert created.status_code == 201, created.data
    pid = created.get_json()["id"]
    prepared = [iti65(pid, rng, sizes) for _ in range(bundles)]
    # the request bodies as a client sends them: bytes, encoded before the clock starts (the server's work only),
    # and the SHA-1 of each Binary's bytes, which ITI-68 checks later
    bodies = [json.dumps(bundle, separators=(",", ":")).encode() for bundle, _ in prepared]
    sha1s = [[hashlib.sha1(base64.b64decode(e["resource"]["data"])).hexdigest()  # noqa: S324
              if e["resource"]["resourceType"] == "Binary" else "" for e in bundle["entry"]] for bundle, _ in prepared]
    ids: list[tuple[str, str]] = []
    total = 0
    sending = headers(prefer=prefer)
    start = time.perf_counter()
    for (_, size), body, digests in zip(prepared, bodies, sha1s, strict=True):
        response = client.post("/fhir", data=body, headers=sending)
        assert response.status_code == 200, response.data[:500]
        for digest, got in zip(digests, response.get_json()["entry"], strict=True):
            if digest:
                ids.append((got["response"]["location"].split("/Binary/")[-1].split("/")[0], digest))
        total += size
    elapsed = time.perf_counter() - start
    db.dispose()
    return bundles * PER_BUNDLE, total, elapsed, ids


def retrieve(url: str, ids: list[tuple[str, str]]) -> tuple[int, float]:
    db = Database(url)
    client = create_app(Settings(database_url=url, jwt_secret=SECRET), database=db).test_client()
    raw_headers = headers("*/*")
    total = 0
    start = time.perf_counter()
    for bid, sha1 in ids:
        response = client.get(f"/fhir/Binary/{bid}", headers=raw_headers)
        assert response.status_code == 200 and not response.content_type.startswith("application/fhir"), (
            response.status_code, response.content_type)
        assert hashlib.sha1(response.data).hexdigest() == sha1  # noqa: S324
        total += len(response.data)
    elapsed = time.perf_counter() - start
    db.dispose()
    return total, elapsed


def floor(url: str, bundles: int, sizes: tuple[int, int]) -> tuple[int, float]:
    """Documents/s of COPYing the resources of `bundles` ITI-65s into a plain table, a transaction each."""
    rng = random.Random(11)
    texts = [[json.dumps(e["resource"], separators=(",", ":")) for e in iti65("p", rng, sizes)[0]["entry"]]
             for _ in range(bundles)]
    db = Database(url)
    raw = db.engine.raw_connection()
    try:
        pg = raw.driver_connection
        with pg.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS mhd_floor")
            cur.execute("CREATE TABLE mhd_floor (content text)")
            # stored as the server stores bodies (migration 0006): lz4, else uncompressed
            cur.execute("SELECT attcompression FROM pg_attribute WHERE attrelid = 'resource_version'::regclass "
                        "AND attname = 'content'")
            if (cur.fetchone() or [""])[0] == "l":
                cur.execute("ALTER TABLE mhd_floor ALTER COLUMN content SET COMPRESSION lz4")
            else:
                cur.execute("ALTER TABLE mhd_floor ALTER COLUMN content SET STORAGE EXTERNAL")
        pg.commit()
        start = time.perf_counter()
        for bundle in texts:
            with pg.cursor() as cur, cur.copy("COPY mhd_floor (content) FROM STDIN") as copy:
                for text_ in bundle:
                    copy.write_row((text_,))
            pg.commit()
        elapsed = time.perf_counter() - start
        with pg.cursor() as cur:
            cur.execute("DROP TABLE mhd_floor")
        pg.commit()
    finally:
        raw.close()
        db.dispose()
    return bundles * PER_BUNDLE, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=f"sqlite:///{Path(__file__).parent / 'out' / 'mhd.db'}")
    parser.add_argument("--bundles", type=int, default=20, help="ITI-65 bundles per process")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--kb", type=int, nargs=2, default=[1, 100], metavar=("MIN", "MAX"),
                        help="document sizes, uniform between MIN and MAX KB")
    parser.add_argument("--prefer-minimal", action="store_true",
                        help="send ITI-65 with `Prefer: return=minimal` (an MHD Document Source needs no echo of its "
                        "resources: each response entry is its status, location, etag and lastModified)")
    args = parser.parse_args()
    Path(__file__).parent.joinpath("out").mkdir(exist_ok=True)
    db = Database(args.database_url)
    upgrade(db)
    if db.engine.dialect.name == "postgresql":
        with db.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    db.dispose()
    prefer = "return=minimal" if args.prefer_minimal else None
    print(f"store: {args.database_url}; ITI-65 of {PER_BUNDLE} documents ({args.kb[0]}-{args.kb[1]} KB) each; "
          f"Prefer: {prefer or '(none: the resources echoed)'}")
    last_ids: list[tuple[str, str]] = []
    for processes in args.processes:
        seeds = [(args.database_url, random.randrange(10**9), args.bundles, tuple(args.kb), prefer)
                 for _ in range(processes)]
        start = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            results = pool.map(_worker, seeds)
        wall = time.perf_counter() - start
        docs = sum(r[0] for r in results)
        size = sum(r[1] for r in results)
        posting = max(r[2] for r in results)
        last_ids = [i for r in results for i in r[3]]
        print(f"ITI-65, {processes} process(es): {docs} documents, {size / 1e6:.1f} MB in {posting:.1f} s "
              f"(posting; {wall:.1f} s with start-up): {docs / posting:.0f} documents/s, "
              f"{size / 1e6 / posting:.1f} MB/s")
    total, elapsed = retrieve(args.database_url, last_ids)
    print(f"ITI-68, 1 process: {len(last_ids)} documents, {total / 1e6:.1f} MB in {elapsed:.2f} s: "
          f"{total / 1e6 / elapsed:.1f} MB/s, {len(last_ids) / elapsed:.0f} documents/s")
    if args.database_url.startswith("postgresql"):
        docs, seconds = floor(args.database_url, args.bundles, tuple(args.kb))
        print(f"Floor, 1 process: the same resources COPYed into a plain table, a transaction per Bundle: "
              f"{docs / seconds:.0f} documents/s")


if __name__ == "__main__":
    main()
