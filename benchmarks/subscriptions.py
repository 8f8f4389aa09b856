"""Subscriptions (not a test): what active subscriptions cost an ITI-65, and how fast a notification arrives.

    python benchmarks/subscriptions.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/fhir_dmp_subs \
        --bundles 20 --notifications 50

Through the Flask app in-process (as benchmarks/mhd.py), with a delivery worker thread (as each `serve` process
runs one) and a real HTTP receiver on 127.0.0.1 answering 200:

1. ITI-65 throughput (documents/s, 10 documents of 1-4 KB per Bundle, posted by a médecin authorised on the DMP),
   alternating rounds with no subscription and with 100 active subscriptions, so that both see the same store:
   - `others`: 100 patient-dependent subscriptions on 100 other DMPs (the common case: the check finds none);
   - `same`: 100 on the DMP being fed, by its authorised médecin, `id-only` (each document becomes 100 events,
     numbered in the ITI-65's transaction, then 100 notifications per Bundle to deliver).
   Target (issue 19): `others` within 10% of none.
2. Delivery latency: single DocumentReferences created one at a time on a DMP with one subscription; the time from
   the 201 (the commit) to the notification's arrival at the receiver, p50 and p95. Target: p95 under 1 s.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import random
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mhd import INS, PER_BUNDLE, SECRET, headers, iti65  # noqa: E402
from sqlalchemy import text  # noqa: E402

from fhir_dmp.config import Settings  # noqa: E402
from fhir_dmp.http.app import create_app  # noqa: E402
from fhir_dmp.services import delivery  # noqa: E402
from fhir_dmp.storage import subscriptions as store  # noqa: E402
from fhir_dmp.storage.db import Database  # noqa: E402
from fhir_dmp.storage.migrate import upgrade  # noqa: E402

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TOPIC = "https://profiles.ihe.net/ITI/DSUBm/SubscriptionTopic/DSUBm-SubscriptionTopic-DocumentReference-PatientDependent"


class Receiver:
    """Answers 200 to every POST and notes when each event's focus arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.posts = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                at = time.perf_counter()
                owner.posts += 1
                for p in body["entry"][0]["resource"]["parameter"]:
                    for part in p.get("part", []):
                        if part["name"] == "focus":
                            owner.arrived.setdefault(part["valueReference"]["reference"].rsplit("/", 1)[1], at)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def document(pid: str, rng: random.Random) -> dict:
    """A DocumentReference of an ITI-65 of benchmarks/mhd.py, its bytes inline (a plain create)."""
    doc = iti65(pid, rng, (1, 1))[0]["entry"][1]["resource"]
    raw = rng.randbytes(64)
    doc["content"] = [{"attachment": {
        "contentType": "application/pdf", "data": base64.b64encode(raw).decode(), "size": len(raw),
        "hash": base64.b64encode(hashlib.sha1(raw).digest()).decode(), "title": "Document"}}]  # noqa: S324
    return doc


def subscription(endpoint: str, pid: str) -> dict:
    return {"resourceType": "Subscription", "status": "requested", "reason": "benchmark", "criteria": TOPIC,
            "_criteria": {"extension": [{"url": BACKPORT + "backport-filter-criteria",
                                         "valueString": f"DocumentReference?patient=Patient/{pid}"}]},
            "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
                        "_payload": {"extension": [{"url": BACKPORT + "backport-payload-content",
                                                    "valueCode": "id-only"}]}}}


def new_dmp(client, rng: random.Random) -> str:  # type: ignore[no-untyped-def]
    ins = f"1{rng.randrange(10**11, 10**12)}"
    patient = {"resourceType": "Patient", "identifier": [{"system": INS, "value": ins}],
               "name": [{"family": "BENCH", "given": ["Subs"]}], "gender": "female", "birthDate": "1970-01-01"}
    created = client.post("/fhir/Patient", json=patient, headers=headers())  # the médecin: authorised
    assert created.status_code == 201, created.data
    return created.get_json()["id"]


def subscribe(client, endpoint: str, pid: str, n: int) -> list[str]:  # type: ignore[no-untyped-def]
    ids = []
    for _ in range(n):
        response = client.post("/fhir/Subscription", json=subscription(endpoint, pid), headers=headers())
        assert response.status_code == 201, response.data
        ids.append(response.get_json()["id"])
    return ids


def turn(client, ids: list[str], status: str) -> None:  # type: ignore[no-untyped-def]
    for sid in ids:
        body = client.get(f"/fhir/Subscription/{sid}", headers=headers()).get_json()
        assert client.put(f"/fhir/Subscription/{sid}", json={**body, "status": status},
                          headers=headers()).status_code == 200


def throughput(client, pid: str, bundles: int, rng: random.Random) -> float:  # type: ignore[no-untyped-def]
    prepared = [iti65(pid, rng, (1, 4))[0] for _ in range(bundles)]
    start = time.perf_counter()
    for bundle in prepared:
        response = client.post("/fhir", json=bundle, headers=headers())
        assert response.status_code == 200, response.data[:300]
    return bundles * PER_BUNDLE / (time.perf_counter() - start)


def wait_idle(db: Database, seconds: float = 120) -> None:
    """Until the worker has shaken hands and delivered every event (a round must not pay the previous one's)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with db.engine.connect() as conn:
            left = conn.execute(text("SELECT count(*) FROM subscription WHERE status = 'requested' "
                                     "OR (status = 'active' AND delivered < events)")).scalar_one()
        if not left:
            return
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=f"sqlite:///{Path(__file__).parent / 'out' / 'subscriptions.db'}")
    parser.add_argument("--bundles", type=int, default=10, help="ITI-65 Bundles per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each configuration, alternated")
    parser.add_argument("--notifications", type=int, default=40, help="documents timed for the delivery latency")
    parser.add_argument("--skip-same", action="store_true", help="skip the 100-subscriptions-on-one-DMP case")
    args = parser.parse_args()
    Path(__file__).parent.joinpath("out").mkdir(exist_ok=True)
    db = Database(args.database_url)
    upgrade(db)
    receiver = Receiver()
    settings = Settings(database_url=args.database_url, jwt_secret=SECRET, subscription_endpoints="http://127.0.0.1")
    app = create_app(settings, database=db)
    client = app.test_client()
    stop = delivery.start(app.extensions["fhir_dmp"]["pipeline"].rt, poll=0.2)
    rng = random.Random(19)
    print(f"store: {db.engine.dialect.name}; ITI-65 of {PER_BUNDLE} documents (1-4 KB); delivery worker in-process")

    fed = new_dmp(client, rng)
    others = [sid for _ in range(100) for sid in subscribe(client, receiver.url, new_dmp(client, rng), 1)]
    same = [] if args.skip_same else subscribe(client, receiver.url, fed, 100)
    wait_idle(db)  # the handshakes
    if db.engine.dialect.name == "postgresql":
        with db.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    throughput(client, fed, args.bundles, rng)  # warm-up (compiled statements, caches), not counted
    wait_idle(db)
    configurations = {"none": [], "others": others, **({"same": same} if same else {})}
    rates: dict[str, list[float]] = {name: [] for name in configurations}
    live: list[str] = others + same
    for _ in range(args.rounds):
        for name, ids in configurations.items():
            turn(client, [s for s in live if s not in ids], "off")
            turn(client, [s for s in ids if s not in live], "requested")
            live = list(ids)
            wait_idle(db)
            rates[name].append(throughput(client, fed, args.bundles, rng))
            wait_idle(db)
    base = statistics.median(rates["none"])
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"ITI-65, {name:>6} ({len(configurations[name]):3d} active subscriptions): {rate:6.1f} documents/s "
              f"(median of {len(values)}: {', '.join(f'{v:.1f}' for v in values)}); {100 * (rate / base - 1):+.1f}% "
              "against none")
    # what an ITI-65 pays when nobody subscribes to its DMP: the one check (services/events.py), timed alone, so
    # that a loaded machine's noise does not hide it
    turn(client, live, "off")
    turn(client, others, "requested")
    live = list(others)
    wait_idle(db)
    runs = 2000
    with db.engine.connect() as conn:
        store.candidates(conn, [fed], ["DocumentReference", "List"])
        start = time.perf_counter()
        for _ in range(runs):
            assert store.candidates(conn, [fed], ["DocumentReference", "List"]) == []
        check = (time.perf_counter() - start) / runs
    per_bundle = PER_BUNDLE / base
    print(f"the check with 100 subscriptions on other DMPs: {1e6 * check:.0f} us per ITI-65 "
          f"({100 * check / per_bundle:.2f}% of an ITI-65 of {1000 * per_bundle:.0f} ms)")

    turn(client, live, "off")
    watched = new_dmp(client, rng)
    subscribe(client, receiver.url, watched, 1)
    wait_idle(db)
    latencies = []
    for _ in range(args.notifications):
        response = client.post("/fhir/DocumentReference", json=document(watched, rng), headers=headers())
        committed = time.perf_counter()
        assert response.status_code == 201, response.data[:300]
        rid = response.get_json()["id"]
        deadline = time.monotonic() + 10
        while rid not in receiver.arrived and time.monotonic() < deadline:
            time.sleep(0.001)
        latencies.append(receiver.arrived.get(rid, float("inf")) - committed)
        time.sleep(rng.uniform(0.05, 0.2))
    latencies.sort()
    p95 = latencies[max(0, int(len(latencies) * 0.95) - 1)]
    print(f"delivery latency, {len(latencies)} notifications: p50 {1000 * statistics.median(latencies):.0f} ms, "
          f"p95 {1000 * p95:.0f} ms, max {1000 * latencies[-1]:.0f} ms (target: p95 < 1000 ms)")
    stop.set()
    receiver.server.shutdown()
    db.dispose()


if __name__ == "__main__":
    main()
