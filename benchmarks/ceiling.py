"""The ceiling (not a test): fhir-dmp's read, search and create over HTTP, each next to what a bare Flask +
gunicorn + psycopg 3 app serves on the same machine with the same load client, and the SQL statements and
transactions each fhir-dmp request sends. It tells how much of the stack's ceiling the server reaches, and
where the rest goes.

    python benchmarks/ceiling.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/db \
        --duration 10 --clients 8 --workers 2 --threads 4

One run: (1) two fresh schemas in that database, `ceiling_bare_<pid>` for benchmarks/bare_app.py (tables it
fills itself) and `ceiling_fhir_<pid>` for fhir-dmp; (2) the bare app under gunicorn, and `fhir-dmp serve`
with FHIR_DMP_DEBUG_SQL=1, both with the same --workers and --threads (fhir-dmp's defaults: 2 and 4);
(3) a médecin creates --dmps Patients (which authorises them) and files --documents conformant
DocumentReferences in each (tests/fhirclient.py's builders); a few requests of each kind, one at a time, give
the X-Debug-SQL counts; (4) that server stops and a second `fhir-dmp serve` without FHIR_DMP_DEBUG_SQL serves
the timed scenarios (rates are measured without the counting); (5) each scenario runs --duration seconds
after a warm-up, from --clients threads on keep-alive connections, on random DMPs and documents; (6) every
process started is stopped and both schemas dropped, on success, error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

import bare_app  # noqa: E402
import psycopg  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from fhir_dmp.services.identity import mint_token  # noqa: E402
from tests.fhirclient import DOCTOR, document, patient  # noqa: E402

SECRET = "ceiling-benchmark-secret-at-least-thirty-two-bytes"
HOST = "127.0.0.1"  # loopback only
FHIR = "application/fhir+json"
Request = tuple[str, str, bytes | None, dict[str, str]]  # method, path, body, headers


@dataclass
class Result:
    """One scenario's latencies (seconds, sorted) and errors over `seconds` of measure."""

    name: str
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    client_cpu: float = 0.0  # the load client's own CPU, in cores, over the scenario (it shares the machine)
    app_cpu: float = float("nan")  # the server's processes' CPU seconds over the measured seconds
    db_cpu: float = float("nan")  # the database's backends' CPU seconds over the measured seconds

    def per_request(self, seconds: float) -> float:
        """CPU milliseconds per request measured: a cost that background load does not change, unlike the rate."""
        return seconds / len(self.latencies) * 1000 if self.latencies else float("nan")

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def quantile(self, q: float) -> float:
        return self.latencies[int(q * (len(self.latencies) - 1))] * 1000 if self.latencies else float("nan")


class Server:
    """A server process in its own process group (gunicorn and its workers stop together), logging to a file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], port: int, ready_path: str,
                 logs: Path) -> None:
        self.name, self.command, self.env, self.port, self.ready_path = name, command, env, port, ready_path
        self.log = logs / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(self.command, env={**os.environ, **self.env}, cwd=ROOT, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.process.returncode}):\n{self.tail()}")
            try:
                conn = http.client.HTTPConnection(HOST, self.port, timeout=5)
                conn.request("GET", self.ready_path)
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} not ready after {timeout} s:\n{self.tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # the group we started: gunicorn's master and workers
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def reproduce(self) -> str:
        return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in self.env.items()), *map(shlex.quote, self.command)])


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def call(port: int, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    response.data = response.read()  # type: ignore[attr-defined]
    return response


class CpuMeter:
    """CPU seconds (user + system, from /proc) used by a server's process group and by the database's client
    backends between `start` and `stop`: what a request costs the machine, whatever else runs beside."""

    def __init__(self, pgid: int, libpq: str) -> None:
        self.pgid, self.libpq = pgid, libpq
        self.app = self.db = 0.0
        self._begin: tuple[dict[int, int], dict[int, int]] = ({}, {})

    @staticmethod
    def _ticks(pid: int) -> tuple[int, int] | None:
        """(process group, utime + stime ticks) of a process, None when it is gone."""
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return None
        return int(fields[2]), int(fields[11]) + int(fields[12])

    def _sample(self) -> tuple[dict[int, int], dict[int, int]]:
        app = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and (t := self._ticks(int(entry.name))) is not None and t[0] == self.pgid:
                app[int(entry.name)] = t[1]
        with psycopg.connect(self.libpq, autocommit=True) as conn:
            pids = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                               "AND backend_type = 'client backend' AND pid <> pg_backend_pid()")]
        db = {pid: t[1] for pid in pids if (t := self._ticks(pid)) is not None}
        return app, db

    def start(self) -> None:
        self._begin = self._sample()

    def stop(self) -> None:
        app, db = self._sample()
        hz = os.sysconf("SC_CLK_TCK")
        self.app = sum(v - self._begin[0].get(k, 0) for k, v in app.items()) / hz
        self.db = sum(v - self._begin[1].get(k, 0) for k, v in db.items()) / hz


def run_load(name: str, port: int, make: Callable[[random.Random], Request], expect: int, clients: int,
             duration: float, warmup: float, meter: CpuMeter | None = None) -> Result:
    """`clients` threads, each on its own keep-alive connection, sending `make`'s requests back to back;
    latencies after the warm-up are kept, and `meter` measures the CPU of those same seconds."""
    start = time.perf_counter() + 0.2
    measure_from, stop_at = start + warmup, start + warmup + duration
    result = Result(name, duration)
    lock = threading.Lock()

    def metering() -> None:
        assert meter is not None
        time.sleep(max(0.0, measure_from - time.perf_counter()))
        meter.start()
        time.sleep(max(0.0, stop_at - time.perf_counter()))
        meter.stop()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        kept: list[float] = []
        while (now := time.perf_counter()) < start:
            time.sleep(start - now)
        while True:
            method, path, body, headers = make(rng)  # built before the clock starts
            t0 = time.perf_counter()
            if t0 >= stop_at:
                break
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=60)
                status, data = 0, repr(exc).encode()
            t1 = time.perf_counter()
            if status != expect:
                with lock:
                    result.errors += 1
                    result.first_error = result.first_error or f"{status}: {data[:300]!r}"
            elif t0 >= measure_from and t1 <= stop_at:
                kept.append(t1 - t0)
        conn.close()
        with lock:
            result.latencies.extend(kept)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    if meter is not None:
        threads.append(threading.Thread(target=metering, daemon=True))
    cpu = time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.client_cpu = (time.process_time() - cpu) / (time.perf_counter() - start)
    result.latencies.sort()
    if meter is not None:
        result.app_cpu, result.db_cpu = meter.app, meter.db
    return result


class Dmps:
    """The loaded DMPs: Patient ids and their DocumentReference ids, and the médecin's request headers."""

    def __init__(self) -> None:
        token = mint_token(DOCTOR, secret=SECRET, ttl_seconds=86400)
        self.headers = {"Authorization": f"Bearer {token}", "Accept": FHIR, "Content-Type": FHIR}
        self.patients: list[str] = []
        self.documents: list[str] = []

    def load(self, port: int, dmps: int, documents: int) -> None:
        for i in range(dmps):
            response = call(port, "POST", "/fhir/Patient", json.dumps(patient(f"18001751{i:05d}")).encode(),
                            self.headers)
            assert response.status == 201, response.data  # type: ignore[attr-defined]
            pid = json.loads(response.data)["id"]  # type: ignore[attr-defined]
            self.patients.append(pid)
            for _ in range(documents):
                response = call(port, "POST", "/fhir/DocumentReference", self.new_document(pid), self.headers)
                assert response.status == 201, response.data  # type: ignore[attr-defined]
                self.documents.append(json.loads(response.data)["id"])  # type: ignore[attr-defined]

    @staticmethod
    def new_document(pid: str) -> bytes:
        return json.dumps(document(pid, b"Compte rendu de consultation. " * 40)).encode()  # ~2 KB stored

    def read(self, rng: random.Random) -> Request:
        return "GET", f"/fhir/DocumentReference/{rng.choice(self.documents)}", None, self.headers

    def search(self, rng: random.Random) -> Request:
        return "GET", f"/fhir/DocumentReference?patient={rng.choice(self.patients)}&status=current", None, \
            self.headers

    def create(self, rng: random.Random) -> Request:
        return "POST", "/fhir/DocumentReference", self.new_document(rng.choice(self.patients)), self.headers


def sql_counts(port: int, dmps: Dmps, times: int = 5) -> dict[str, list[str]]:
    """X-Debug-SQL of `times` requests of each kind, one at a time."""
    rng = random.Random(1)
    counts: dict[str, list[str]] = {}
    for name, make, expect in (("read", dmps.read, 200), ("search", dmps.search, 200),
                               ("create", dmps.create, 201)):
        for _ in range(times):
            method, path, body, headers = make(rng)
            response = call(port, method, path, body, headers)
            assert response.status == expect, response.data  # type: ignore[attr-defined]
            counts.setdefault(name, []).append(response.headers.get("X-Debug-SQL", "(no header)"))
    return counts


def machine() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    pool = "psycopg_pool" if bare_app.ConnectionPool is not None else "one connection per thread (no psycopg_pool)"
    return (f"{datetime.now().isoformat(timespec='seconds')}; nproc {os.cpu_count()}; load average {load}; "
            f"{platform.platform()}; Python {platform.python_version()}; psycopg {psycopg.__version__}; "
            f"bare app connections: {pool}")


def urls(database_url: str, schema: str) -> tuple[str, str]:
    """(libpq URL of the database, SQLAlchemy URL pinned to `schema`)."""
    url = make_url(database_url)
    libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
    pinned = url.set(drivername="postgresql+psycopg").update_query_dict({"options": f"-csearch_path={schema}"})
    return libpq, pinned.render_as_string(hide_password=False)


def report(results: dict[str, Result], counts: dict[str, list[str]]) -> None:
    print(f"\n{'scenario':<26}{'requests':>9}{'errors':>7}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'client CPU':>11}")
    for r in results.values():
        print(f"{r.name:<26}{len(r.latencies):>9}{r.errors:>7}{r.rate:>9.0f}{r.quantile(.5):>9.2f}"
              f"{r.quantile(.95):>9.2f}{r.client_cpu:>11.2f}")
        if r.errors:
            print(f"    first error: {r.first_error}")
    print("\nfhir-dmp / bare (rate ratio: share of the bare ceiling reached; p50 ratio: times slower)")
    for fhir, bare in (("fhir read", "bare read+audit INSERT"), ("fhir search", "bare read+audit INSERT"),
                       ("fhir create", "bare 2 KB INSERT")):
        f, b = results[fhir], results[bare]
        print(f"  {fhir:<12} vs {bare:<24} rate {f.rate / b.rate:6.2f}   p50 {f.quantile(.5) / b.quantile(.5):6.1f}")
    print("\nCPU per request measured (ms: the server's processes + the database's backends, from /proc); the cost "
          "ratio bare / fhir-dmp is what the rate ratio tends to on a saturated machine, and background load does "
          "not move it")
    for r in results.values():
        app, db = r.per_request(r.app_cpu), r.per_request(r.db_cpu)
        print(f"  {r.name:<26} app {app:6.2f}  database {db:6.2f}  total {app + db:6.2f}")
    for fhir, bare in (("fhir read", "bare read+audit INSERT"), ("fhir search", "bare read+audit INSERT"),
                       ("fhir create", "bare 2 KB INSERT")):
        f, b = results[fhir], results[bare]
        cost = (b.per_request(b.app_cpu) + b.per_request(b.db_cpu)) / (f.per_request(f.app_cpu)
                                                                      + f.per_request(f.db_cpu))
        print(f"  {fhir:<12} vs {bare:<24} cost ratio {cost:6.2f}")
    print("\nSQL per fhir-dmp request (X-Debug-SQL, from the FHIR_DMP_DEBUG_SQL=1 server; the rates above are "
          "from a second server without it):")
    for name, values in counts.items():
        print(f"  {name:<7} {' | '.join(sorted(set(values)))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--duration", type=float, default=10, help="seconds measured per scenario (1-120)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per scenario, not measured")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads (1-64)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of both servers")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker of both servers")
    parser.add_argument("--dmps", type=int, default=10, help="DMPs (Patients) loaded")
    parser.add_argument("--documents", type=int, default=10, help="DocumentReferences per DMP")
    args = parser.parse_args()
    if not (1 <= args.duration <= 120 and 0 <= args.warmup <= 30 and 1 <= args.clients <= 64
            and 1 <= args.workers <= 16 and 1 <= args.threads <= 64 and args.dmps >= 1 and args.documents >= 1):
        parser.error("out of bounds: --duration 1-120, --warmup 0-30, --clients 1-64, --workers 1-16, --threads 1-64")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill runs the clean-up below, like Ctrl-C
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C even when started in the background
    tag = os.getpid()
    bare_schema, fhir_schema = f"ceiling_bare_{tag}", f"ceiling_fhir_{tag}"
    libpq, fhir_url = urls(args.database_url, fhir_schema)
    logs = Path(tempfile.mkdtemp(prefix="fhir-dmp-ceiling-"))
    gunicorn = ["--workers", str(args.workers), "--threads", str(args.threads)]
    exe = Path(sys.executable).with_name("fhir-dmp")
    fhir_cmd = [str(exe) if exe.exists() else "fhir-dmp", "serve", "--front", "gunicorn", "--host", HOST,
                "--database-url", fhir_url, *gunicorn]
    servers: list[Server] = []
    print(f"machine: {machine()}")
    print(f"{args.clients} clients, {args.duration:g} s per scenario after {args.warmup:g} s of warm-up; "
          f"servers: {args.workers} workers x {args.threads} threads; logs in {logs}")
    try:
        bare_app.prepare(libpq, bare_schema)
        with psycopg.connect(libpq, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {fhir_schema}")
            print(f"PostgreSQL: {conn.execute('SHOW server_version').fetchone()[0]}")  # type: ignore[index]
        bare_port = free_port()
        bare = Server("bare", [sys.executable, "-m", "gunicorn", "--bind", f"{HOST}:{bare_port}", *gunicorn,
                               "--access-logfile", "-", "--chdir", str(HERE), "bare_app:create_app()"],
                      {"BARE_DATABASE_URL": libpq, "BARE_SCHEMA": bare_schema, "BARE_POOL_SIZE": str(args.threads)},
                      bare_port, "/dict", logs)
        port = free_port()
        debug = Server("fhir-dmp-debug", [*fhir_cmd, "--port", str(port)],
                       {"FHIR_DMP_JWT_SECRET": SECRET, "FHIR_DMP_DEBUG_SQL": "1"}, port, "/fhir/metadata", logs)
        servers += [bare.start(), debug.start()]
        debug.wait_ready()
        dmps = Dmps()
        t0 = time.perf_counter()
        dmps.load(port, args.dmps, args.documents)
        print(f"loaded {args.dmps} DMPs x {args.documents} DocumentReferences in {time.perf_counter() - t0:.1f} s")
        with psycopg.connect(libpq, autocommit=True, options=f"-csearch_path={fhir_schema}") as conn:
            conn.execute("ANALYZE")
        counts = sql_counts(port, dmps)
        debug.stop()
        port = free_port()
        plain = Server("fhir-dmp", [*fhir_cmd, "--port", str(port)], {"FHIR_DMP_JWT_SECRET": SECRET}, port,
                       "/fhir/metadata", logs)
        servers.append(plain.start())
        bare.wait_ready()
        plain.wait_ready()
        row = 1 + bare_app.ROWS

        def bare_get(path: str) -> Callable[[random.Random], Request]:
            return lambda rng: ("GET", path.format(rng.randrange(1, row)), None, {"Authorization": "Bearer x"})

        body = bare_app.payload().encode()
        scenarios = [  # each compared pair back to back, so that both see the same background load
            ("bare dict", bare_port, bare_get("/dict"), 200),
            ("bare read", bare_port, bare_get("/row/{}"), 200),
            ("bare read+audit INSERT", bare_port, bare_get("/row-audit/{}"), 200),
            ("fhir read", port, dmps.read, 200),
            ("fhir search", port, dmps.search, 200),
            ("bare 2 KB INSERT", bare_port, lambda rng: ("POST", "/insert", body, {}), 201),
            ("fhir create", port, dmps.create, 201),
        ]
        results: dict[str, Result] = {}
        meters = {bare_port: bare, port: plain}
        for name, at, make, expect in scenarios:
            meter = CpuMeter(meters[at].process.pid, libpq)  # type: ignore[union-attr]
            results[name] = run_load(name, at, make, expect, args.clients, args.duration, args.warmup, meter)
            print(f"  {name}: {results[name].rate:.0f} req/s (load average {os.getloadavg()[0]:.2f})", flush=True)
        report(results, counts)
        print("\nreproduce:")
        print(f"  {' '.join(map(shlex.quote, [sys.executable, *sys.argv]))}")
        print("  servers, as started (schemas made by this script):")
        for server in (bare, debug, plain):
            print(f"    {server.reproduce()}")
    finally:
        for server in reversed(servers):
            server.stop()
        try:
            with psycopg.connect(libpq, autocommit=True) as conn:
                for schema in (bare_schema, fhir_schema):
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        except psycopg.Error as exc:
            print(f"could not drop the schemas {bare_schema}, {fhir_schema}: {exc}", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted: the servers started are stopped, the schemas dropped", file=sys.stderr)
        sys.exit(130)
