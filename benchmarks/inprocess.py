"""One request's cost without the network (not a test): a professional's read, ITI-67 search and create through
the Flask app in-process, one at a time, on the store given: wall time and this process's CPU per request
(the app's own work; the database's runs in its processes), and the SQL statements each sends.

    python benchmarks/inprocess.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/db [--requests 500]

The database is emptied of fhir-dmp's tables first (use a database of its own). A médecin creates a DMP (which
authorises them) and files documents; the read is `GET DocumentReference/{id}`, the search
`DocumentReference?patient={id}&status=current`, the create a conformant DocumentReference.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text  # noqa: E402

from fhir_dmp.config import Settings  # noqa: E402
from fhir_dmp.http.app import create_app  # noqa: E402
from fhir_dmp.storage.db import Database  # noqa: E402
from fhir_dmp.storage.migrate import upgrade  # noqa: E402
from fhir_dmp.storage.statements import counting, watch  # noqa: E402
from fhir_dmp.storage.tables import metadata  # noqa: E402
from tests.fhirclient import DOCTOR, FhirTestClient, document, json_of, patient  # noqa: E402

SECRET = "benchmark-secret-at-least-thirty-two-bytes"


def doctor_on_empty_store(database_url: str) -> tuple[Database, FhirTestClient]:
    """The store at `database_url` emptied of fhir-dmp's tables and migrated, and a médecin's client on the app
    over it (the Flask test client: no network)."""
    db = Database(database_url)
    with db.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(text(f"DROP TABLE IF EXISTS {table.name} CASCADE"))
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    upgrade(db)
    app = create_app(Settings(database_url=db.url, jwt_secret=SECRET), database=db)
    return db, FhirTestClient(app.test_client(), SECRET).as_(**DOCTOR)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--requests", type=int, default=500, help="timed requests of each kind")
    args = parser.parse_args()
    db, client = doctor_on_empty_store(args.database_url)
    pid = json_of(client.post("Patient", patient()))["id"]
    docs = [json_of(client.post("DocumentReference", document(pid)))["id"] for _ in range(10)]
    headers = {"Authorization": f"Bearer {client.token()}", "Accept": "application/fhir+json"}
    watch(db.engine)
    kinds: dict[str, Callable[[int], object]] = {
        "read": lambda i: client.http.get(f"/fhir/DocumentReference/{docs[i % len(docs)]}", headers=headers),
        "search": lambda i: client.http.get(f"/fhir/DocumentReference?patient={pid}&status=current&_count=20",
                                            headers=headers),
        "create": lambda i: client.post("DocumentReference", document(pid)),
    }
    print(f"store: {db.url.split('@')[-1]}; {args.requests} requests of each kind, one at a time")
    for name, send in kinds.items():
        for i in range(30):  # warm-up
            send(i)
        with counting() as counts:
            send(0)
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(args.requests):
            send(i)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"{name:7s} {wall / args.requests * 1000:6.2f} ms wall  {cpu / args.requests * 1000:6.2f} ms CPU  "
              f"{counts.statements} statements, {counts.transactions} transaction(s)")
    db.dispose()


if __name__ == "__main__":
    main()
