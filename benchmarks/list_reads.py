"""What showing a SubmissionSet as its reader may see it costs (not a test): a professional's `GET List/{id}` and
`List?patient=` through the Flask app in-process, with the List's entries judged against the caller's scope and the
List itself seen only when it names something they see (policy/lists.py), and, in the same run, with both switched
off (the List as stored, as before), alternately; a DocumentReference read for scale. Wall time per request (p50,
mean) and SQL statements per request.

    python benchmarks/list_reads.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/db [--requests 300]

The database is emptied of fhir-dmp's tables first (use a database of its own). A médecin creates a DMP and files
`--lists` ITI-65s of `--documents` documents each; another médecin, authorised, reads them (they see every
document: nothing is removed, and the step costs what it costs when something is).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from inprocess import doctor_on_empty_store  # noqa: E402

from fhir_dmp.policy import lists  # noqa: E402
from fhir_dmp.policy.consents import authorisation  # noqa: E402
from fhir_dmp.storage import criteria as c  # noqa: E402
from fhir_dmp.storage.statements import counting, watch  # noqa: E402
from tests.fhirclient import document, json_of, patient  # noqa: E402
from tests.mhd.helpers import iti65  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--requests", type=int, default=300, help="timed requests of each kind and mode")
    parser.add_argument("--lists", type=int, default=10)
    parser.add_argument("--documents", type=int, default=10)
    args = parser.parse_args()
    db, client = doctor_on_empty_store(args.database_url)
    pid = json_of(client.post("Patient", patient()))["id"]
    for _ in range(args.lists):
        docs = [(document(pid), f"document {i}".encode()) for i in range(args.documents)]
        assert client.post("/fhir", iti65(pid, docs)).status_code == 200
    # the reader: another médecin, authorised (they record their own authorisation), who filed none of it
    reader = client.as_(actor="professional", sub="810000000555", profession="10")
    assert reader.post("Consent", authorisation(pid, "810000000555")).status_code == 201
    client = reader
    found = json_of(client.get(f"List?patient={pid}&_count=100"))["entry"]
    list_ids = [e["resource"]["id"] for e in found]
    doc_ids = [e["resource"]["id"] for e in json_of(client.get(f"DocumentReference?patient={pid}&_count=20"))["entry"]]
    headers = {"Authorization": f"Bearer {client.token()}", "Accept": "application/fhir+json"}
    watch(db.engine)
    kinds: dict[str, Callable[[int], object]] = {
        "List read": lambda i: client.http.get(f"/fhir/List/{list_ids[i % len(list_ids)]}", headers=headers),
        f"List?patient= ({len(list_ids)} Lists)": lambda i: client.http.get(f"/fhir/List?patient={pid}",
                                                                           headers=headers),
        "DocumentReference read": lambda i: client.http.get(f"/fhir/DocumentReference/{doc_ids[i % len(doc_ids)]}",
                                                            headers=headers),
    }
    print(f"store: {db.url.split('@')[-1]}; {args.lists} Lists of {args.documents} entries; {args.requests} requests "
          "of each kind and mode, the modes alternated")
    for name, send in kinds.items():
        times: dict[str, list[float]] = {"shaped": [], "as before": []}
        statements: dict[str, int] = {}
        shaped, naming_seen = lists.shaped, lists.naming_seen
        for i in range(args.requests + 20):
            for mode in times:
                judge = shaped if mode == "shaped" else lambda *_: False
                seen = naming_seen if mode == "shaped" else lambda *_: c.AllOf(())
                with mock.patch.object(lists, "shaped", judge), mock.patch.object(lists, "naming_seen", seen), \
                        counting() as counts:
                    start = time.perf_counter()
                    response = send(i)
                    elapsed = time.perf_counter() - start
                assert response.status_code == 200  # type: ignore[attr-defined]
                if i >= 20:  # warm-up
                    times[mode].append(elapsed * 1000)
                    statements[mode] = counts.statements
        for mode, values in times.items():
            p50, mean = statistics.median(values), statistics.mean(values)
            print(f"  {name:34} {mode:9}  p50 {p50:6.2f} ms  mean {mean:6.2f} ms  {statements[mode]} statements")


if __name__ == "__main__":
    main()
