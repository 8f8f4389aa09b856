"""Cost of the access policy (not a test): ITI-67 latency as an authorised professional, against the same
query as a system caller (no policy restriction), on a data set loaded by `search.py`.

    python benchmarks/search.py --database-url URL --patients 100000 --documents 1000000   # load once
    python benchmarks/policy.py --database-url URL --patients 100000

Both callers pay everything else alike (token, parsing, the AuditEvent every request writes). The
professional is authorised by a Consent (the common path: the DMP's Patient and Consents are loaded, the
scope is ANDed into the statement); a kinésithérapeute shows a narrow habilitation. Queries alternate
between the callers so that both see the same cache state.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search import INS, SECRET, ins, queries  # noqa: E402

from fhir_dmp.config import Settings  # noqa: E402
from fhir_dmp.http.app import create_app  # noqa: E402
from fhir_dmp.policy.consents import authorisation  # noqa: E402
from fhir_dmp.services.identity import mint_token  # noqa: E402
from fhir_dmp.storage.db import Database  # noqa: E402

DOCTOR = "899900000001"
KINE = "899900000002"
CALLERS = {
    "system": {"actor": "system", "sub": "bench"},
    "médecin": {"actor": "professional", "sub": DOCTOR, "profession": "10", "specialty": "SM26"},
    "kiné": {"actor": "professional", "sub": KINE, "profession": "70"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--patients", type=int, required=True, help="as loaded by search.py")
    parser.add_argument("--rounds", type=int, default=200, help="patients drawn")
    args = parser.parse_args()
    db = Database(args.database_url)
    app = create_app(Settings(database_url=args.database_url, jwt_secret=SECRET), database=db)
    client = app.test_client()
    headers = {name: {"Authorization": f"Bearer {mint_token(c, secret=SECRET, ttl_seconds=86400)}"}
               for name, c in CALLERS.items()}
    rng = random.Random(7)
    timings: dict[tuple[str, str], list[float]] = {}
    counts: dict[tuple[str, str], list[int]] = {}
    for _ in range(args.rounds):
        i = rng.randrange(args.patients)
        found = client.get(f"/fhir/Patient?identifier={INS}|{ins(i)}", headers=headers["system"]).get_json()
        pid = found["entry"][0]["resource"]["id"]
        for ps in (DOCTOR, KINE):
            created = client.post("/fhir/Consent", json=authorisation(pid, ps), headers=headers["system"])
            assert created.status_code == 201, created.get_json()
        practitioner = f"8{rng.randrange(max(10, args.patients // 20)):011d}"
        for name, query in queries(pid, ins(i), practitioner):
            for caller in CALLERS:
                started = time.perf_counter()
                response = client.get(f"/fhir/{query}", headers=headers[caller])
                timings.setdefault((name, caller), []).append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, (caller, query, response.get_json())
                counts.setdefault((name, caller), []).append(len(response.get_json().get("entry", [])))
    print(f"{'query':28} {'system p50/p95':>15} {'médecin p50/p95':>16} {'ratio p50/p95':>14} "
          f"{'kiné p50/p95':>14} {'entries sys/méd/kiné':>21}")
    ratios = []
    for name, _ in queries("p", "i", "a"):
        row = {c: timings[(name, c)] for c in CALLERS}
        p = {c: (statistics.median(v), statistics.quantiles(v, n=100)[94]) for c, v in row.items()}
        ratio = (p["médecin"][0] / p["system"][0], p["médecin"][1] / p["system"][1])
        ratios.append(ratio)
        entries = "/".join(f"{statistics.mean(counts[(name, c)]):.1f}" for c in CALLERS)
        print(f"{name:28} {p['system'][0]:7.2f}/{p['system'][1]:<7.2f} {p['médecin'][0]:7.2f}/{p['médecin'][1]:<8.2f} "
              f"{ratio[0]:6.2f}/{ratio[1]:<7.2f} {p['kiné'][0]:6.2f}/{p['kiné'][1]:<7.2f} {entries:>21}")
    print(f"policy cost (médecin / system), geometric mean over the queries: "
          f"p50 {statistics.geometric_mean([r[0] for r in ratios]):.2f}x, "
          f"p95 {statistics.geometric_mean([r[1] for r in ratios]):.2f}x")
    db.dispose()


if __name__ == "__main__":
    main()
