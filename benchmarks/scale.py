"""ITI-67 at scale (not a test): a million DocumentReferences loaded at SQL speed, then timed through the server.

    nice -n 10 python benchmarks/scale.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/scale \
        --dmps 100000 --documents 10

1. A template (`--template` DMPs from search.py's generator) is written into a fresh schema through the server's own
   write path (`Pipeline.handle`): every row of it is the server's.
2. It is cloned in SQL (INSERT ... SELECT over a map of the clones) into `--dmps` DMPs and dmps / 20 Practitioners,
   rewriting pks, version pks, every uuid (last 12 hex digits: the clone number), patient_key, INS, names, authors,
   and the documents' types, classes (borrowed from another template document) and dates (0-729 days back) in the
   index rows; the JSON content keeps the template's types, classes and dates (no query reads them). Secondary
   indexes and foreign keys are dropped before the insert and built after it (at 200K documents: 47.6 s, against
   78.2 s kept in place); primary keys and unique constraints stay.
3. The server (`fhir-dmp serve --front gunicorn`, 2 workers) is checked (a médecin authorised by Consent on cloned
   DMPs; totals against SQL counts), then search.py's ITI-67 queries are timed over HTTP on random DMPs: before
   ANALYZE, then after. README ("At a million documents") says what was measured.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402
from ceiling import HOST, Server, free_port, urls  # noqa: E402
from search import BASE, INS, SECRET, SYSTEM, ins, load_types, patient_bundle, practitioner_bundle, queries  # noqa: E402

from fhir_dmp.config import Settings  # noqa: E402
from fhir_dmp.policy.consents import authorisation  # noqa: E402
from fhir_dmp.services.identity import mint_token  # noqa: E402
from fhir_dmp.services.pipeline import Pipeline  # noqa: E402
from fhir_dmp.services.requests import parse_url  # noqa: E402
from fhir_dmp.storage.db import Database  # noqa: E402
from fhir_dmp.storage.migrate import upgrade  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IDX = ("idx_token", "idx_string", "idx_date", "idx_reference", "idx_uri", "idx_number", "idx_quantity",
       "idx_composite")
UUID = "([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-)[0-9a-f]{12}"
DOCTOR = {"actor": "professional", "sub": "899900000001", "profession": "10", "specialty": "SM26"}


def hexed(col: str) -> str:
    """SQL: every uuid in `col` with its last 12 hex digits replaced by the clone number m.c (unique per clone)."""
    return f"regexp_replace({col}, '{UUID}', '\\1' || lpad(to_hex(m.c), 12, '0'), 'g')"


def write_template(url: str, dmps: int, docs: int) -> None:
    """The template, through the server's write path: Practitioners, then DMPs (a Patient and its documents)."""
    db = Database(url)
    upgrade(db)
    service = Pipeline.load(db, Settings(database_url=url))
    result = service.handle(SYSTEM, parse_url("POST", "", body=practitioner_bundle(0, max(2, dmps // 2)),
                                              base_url=BASE))
    practitioners = [e["response"]["location"].split("/")[-3] for e in result.body["entry"]]
    bundle = patient_bundle(0, dmps, docs, practitioners, load_types(), random.Random(16))
    result = service.handle(SYSTEM, parse_url("POST", "", body=bundle, base_url=BASE))
    assert result.status == 200, result.body
    db.dispose()


def analyze(conn: psycopg.Connection) -> None:
    """ANALYZE this schema's tables only (a bare ANALYZE would also refresh other schemas of the database)."""
    tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()").fetchall()
    conn.execute(f"ANALYZE {', '.join(t for (t,) in tables)}")
    conn.commit()


def timed(conn: psycopg.Connection, label: str, sql: str, params: dict | None = None) -> int:
    started = time.perf_counter()
    cur = conn.execute(sql, params)
    conn.commit()
    print(f"  {label:44} {cur.rowcount:>10} rows {time.perf_counter() - started:7.1f} s", flush=True)
    return cur.rowcount


def build_maps(conn: psycopg.Connection, dmps: int) -> tuple[int, int, int]:
    """The clone maps: one row per cloned Practitioner, per cloned DMP, per cloned row of a DMP. Returns
    (template DMPs, rows per DMP, Practitioners)."""
    conn.execute("""CREATE UNLOGGED TABLE scale_tp AS
        SELECT (t.code::bigint - 800000000000)::int AS j, r.pk AS tpk, r.version_pk AS tvpk, r.id AS tid, t.code
        FROM resource r JOIN idx_token t ON t.resource_pk = r.pk AND t.param = 'identifier'
        WHERE r.resource_type = 'Practitioner'""")
    conn.execute("""CREATE UNLOGGED TABLE scale_td AS
        SELECT (t.code::bigint - 200000000000000)::int AS t, r.id AS tpid, t.code AS tins
        FROM resource r JOIN idx_token t ON t.resource_pk = r.pk AND t.param = 'identifier'
        WHERE r.resource_type = 'Patient'""")
    conn.execute("""CREATE UNLOGGED TABLE scale_tr AS
        SELECT d.t, r.pk AS tpk, r.version_pk AS tvpk, r.id AS tid, r.resource_type,
               (row_number() OVER (PARTITION BY d.t ORDER BY r.pk))::int - 1 AS ord,
               CASE WHEN r.resource_type = 'DocumentReference'
                    THEN (row_number() OVER (PARTITION BY r.resource_type ORDER BY r.pk))::int - 1 END AS di,
               (SELECT a.target_id FROM idx_reference a WHERE a.resource_pk = r.pk AND a.param = 'author') AS tauthor
        FROM resource r JOIN scale_td d ON d.tpid = r.patient_key""")
    k, p = (conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("scale_td", "scale_tp"))
    per = conn.execute("SELECT DISTINCT count(*) FROM scale_tr GROUP BY t").fetchall()
    ndocs = conn.execute("SELECT count(di) FROM scale_tr").fetchone()[0]
    assert len(per) == 1, f"template DMPs of unequal sizes: {per}"
    rows = per[0][0]
    npract = max(p, dmps // 20)
    base = conn.execute("SELECT max(pk) FROM resource").fetchone()[0]
    vbase = conn.execute("SELECT max(pk) FROM resource_version").fetchone()[0]
    args = {"k": k, "p": p, "np": npract, "n": dmps, "rows": rows, "ndocs": ndocs, "base": base, "vbase": vbase}
    # Practitioners: clone j (p <= j < np) of template j % p
    conn.execute("""CREATE UNLOGGED TABLE scale_pm AS
        SELECT g.j AS c, g.j, tp.j AS tj, tp.tpk, tp.tvpk, tp.code AS tcode, '8' || lpad(g.j::text, 11, '0') AS code,
               %(base)s + g.j - %(p)s + 1 AS pk, %(vbase)s + g.j - %(p)s + 1 AS vpk,
               left(tp.tid, 24) || lpad(to_hex(g.j), 12, '0') AS id
        FROM generate_series(%(p)s, %(np)s - 1) g (j) JOIN scale_tp tp ON tp.j = g.j %% %(p)s""", args)
    conn.execute("""CREATE UNLOGGED TABLE scale_pall AS
        SELECT j, id FROM scale_pm UNION ALL SELECT j, tid FROM scale_tp""")
    conn.execute("CREATE UNIQUE INDEX ON scale_pall (j)")
    # DMPs: clone c (k <= c < n) of template DMP c % k
    conn.execute("""CREATE UNLOGGED TABLE scale_dm AS
        SELECT g.c, d.t, d.tpid, d.tins, left(d.tpid, 24) || lpad(to_hex(g.c), 12, '0') AS pid,
               '2' || lpad(g.c::text, 14, '0') AS ins
        FROM generate_series(%(k)s, %(n)s - 1) g (c) JOIN scale_td d ON d.t = g.c %% %(k)s""", args)
    args["base"] += npract - p
    args["vbase"] += npract - p
    conn.execute("""CREATE UNLOGGED TABLE scale_m AS
        SELECT dm.c, dm.t, dm.pid, dm.tpid, dm.ins, dm.tins, tr.tpk, tr.tvpk, tr.resource_type, tr.tauthor,
               %(base)s + (dm.c - %(k)s)::bigint * %(rows)s + tr.ord + 1 AS pk,
               %(vbase)s + (dm.c - %(k)s)::bigint * %(rows)s + tr.ord + 1 AS vpk,
               left(tr.tid, 24) || lpad(to_hex(dm.c), 12, '0') AS id,
               src.tpk AS srcdoc, ((dm.c * 37) %% 730) * interval '1 day' AS shift,
               pa.id AS author
        FROM scale_dm dm JOIN scale_tr tr ON tr.t = dm.t
        LEFT JOIN scale_tr src ON src.di = (tr.di + dm.c * 7) %% %(ndocs)s
        LEFT JOIN scale_pall pa ON tr.tauthor IS NOT NULL AND pa.j = (dm.c * 11 + tr.ord * 3) %% %(np)s""", args)
    conn.commit()
    return k, rows, npract


def drop_secondary(conn: psycopg.Connection) -> list[str]:
    """Drop the foreign keys and the secondary (non-constraint) indexes; returns the DDL that rebuilds them."""
    fks = conn.execute("""SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)
        FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
        WHERE n.nspname = current_schema() AND c.contype = 'f'""").fetchall()
    indexes = conn.execute("""SELECT i.indexname, i.indexdef FROM pg_indexes i
        WHERE i.schemaname = current_schema() AND i.tablename NOT LIKE 'scale\\_%'
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)""").fetchall()
    for table, name, _ in fks:
        conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    conn.commit()
    return [d for _, d in indexes] + [f'ALTER TABLE {t} ADD CONSTRAINT "{n}" {d}' for t, n, d in fks]


def clone(conn: psycopg.Connection, dmps: int, analyze_at: int = 0) -> dict[str, float]:
    """Clone the template into `dmps` DMPs; returns the phases' durations."""
    phases: dict[str, float] = {}
    started = time.perf_counter()
    k, rows, npract = build_maps(conn, dmps)
    print(f"  template: {k} DMPs of {rows} rows (Patient, documents, AuditEvent); {npract} Practitioners in all")
    ddl = drop_secondary(conn)
    phases["maps"] = time.perf_counter() - started
    started = time.perf_counter()
    cols = "pk, resource_type, id, patient_key, version_id, last_updated, deleted, version_pk, doc_type, labels, " \
           "doc_date, owner, governed_by"
    vcols = "pk, resource_type, id, version_id, patient_key, last_updated, method, deleted, content"
    timed(conn, "resource: Practitioners", f"""INSERT INTO resource ({cols})
        SELECT m.pk, r.resource_type, m.id, '', r.version_id, r.last_updated, r.deleted, m.vpk, r.doc_type,
               r.labels, r.doc_date, r.owner, r.governed_by FROM scale_pm m JOIN resource r ON r.pk = m.tpk""")
    timed(conn, "resource_version: Practitioners", f"""INSERT INTO resource_version ({vcols})
        SELECT m.vpk, v.resource_type, m.id, v.version_id, '', v.last_updated, v.method, v.deleted,
               replace(replace(v.content, v.id, m.id), '"' || m.tcode || '"', '"' || m.code || '"')
        FROM scale_pm m JOIN resource_version v ON v.pk = m.tvpk""")
    timed(conn, "idx_token: Practitioners", """INSERT INTO idx_token
        SELECT m.pk, '', i.resource_type, i.param, i.system, CASE WHEN i.param = 'identifier' THEN m.code
        ELSE i.code END, i.text FROM scale_pm m JOIN idx_token i ON i.resource_pk = m.tpk""")
    timed(conn, "idx_string: Practitioners", """INSERT INTO idx_string
        SELECT m.pk, '', i.resource_type, i.param,
               regexp_replace(i.value_norm, '^medecin[0-9]+$', 'medecin' || m.j),
               regexp_replace(i.value_exact, '^MEDECIN[0-9]+$', 'MEDECIN' || m.j)
        FROM scale_pm m JOIN idx_string i ON i.resource_pk = m.tpk""")
    parts = [(k, dmps)] if not analyze_at else [(k, analyze_at), (analyze_at, dmps)]
    for lo, hi in parts:
        clone_dmps(conn, f"m.c >= {lo} AND m.c < {hi}", "" if len(parts) == 1 else f"[{lo}, {hi}) ")
        if hi != dmps:
            started_analyze = time.perf_counter()
            analyze(conn)
            print(f"  ANALYZE after {hi} DMPs (then none until the first measure): "
                  f"{time.perf_counter() - started_analyze:.1f} s", flush=True)
    for seq, table in (("resource_pk_seq", "resource"), ("resource_version_pk_seq", "resource_version")):
        conn.execute(f"SELECT setval('{seq}', (SELECT max(pk) FROM {table}))")
    conn.commit()
    phases["insert"] = time.perf_counter() - started
    started = time.perf_counter()
    conn.execute("SET maintenance_work_mem = '512MB'")
    for statement in ddl:
        timed(conn, statement.split(" ON ")[0].split(" (")[0][:44], statement)
    phases["indexes"] = time.perf_counter() - started
    conn.execute("DROP TABLE scale_m, scale_dm, scale_pall, scale_pm, scale_tr, scale_td, scale_tp")
    conn.commit()
    return phases


def clone_dmps(conn: psycopg.Connection, part: str, label: str) -> None:
    """The DMPs' rows, for the clones `part` selects (an SQL condition on the clone number m.c)."""
    cols = "pk, resource_type, id, patient_key, version_id, last_updated, deleted, version_pk, doc_type, labels, " \
           "doc_date, owner, governed_by"
    vcols = "pk, resource_type, id, version_id, patient_key, last_updated, method, deleted, content"
    timed(conn, label + "resource: DMPs", f"""INSERT INTO resource ({cols})
        SELECT m.pk, r.resource_type, m.id, m.pid, r.version_id, r.last_updated, r.deleted, m.vpk,
               coalesce(s.doc_type, r.doc_type), r.labels, r.doc_date - m.shift, r.owner, r.governed_by
        FROM scale_m m JOIN resource r ON r.pk = m.tpk LEFT JOIN resource s ON s.pk = m.srcdoc WHERE {part}""")
    content = hexed("v.content")
    content = f"""replace(replace(replace({content}, '"value":"' || m.tins || '"', '"value":"' || m.ins || '"'),
        '"family":"NOM' || m.t || '"', '"family":"NOM' || m.c || '"'),
        'Practitioner/' || left(coalesce(m.tauthor, '-'), 24) || lpad(to_hex(m.c), 12, '0'),
        'Practitioner/' || coalesce(m.author, ''))"""
    timed(conn, label + "resource_version: DMPs", f"""INSERT INTO resource_version ({vcols})
        SELECT m.vpk, v.resource_type, m.id, v.version_id, m.pid, v.last_updated, v.method, v.deleted, {content}
        FROM scale_m m JOIN resource_version v ON v.pk = m.tvpk WHERE {part}""")
    timed(conn, label + "idx_token: DMPs", f"""INSERT INTO idx_token
        SELECT m.pk, m.pid, i.resource_type, i.param, i.system,
               CASE WHEN i.resource_type = 'Patient' AND i.param = 'identifier' THEN m.ins
                    ELSE {hexed('i.code')} END, i.text
        FROM scale_m m JOIN idx_token i ON i.resource_pk = m.tpk AND (m.srcdoc IS NULL OR i.param NOT IN
             ('type', 'category')) WHERE {part}""")
    timed(conn, label + "idx_token: DMPs, type and class", f"""INSERT INTO idx_token
        SELECT m.pk, m.pid, i.resource_type, i.param, i.system, i.code, i.text
        FROM scale_m m JOIN idx_token i ON i.resource_pk = m.srcdoc AND i.param IN ('type', 'category') WHERE {part}""")
    timed(conn, label + "idx_string: DMPs", f"""INSERT INTO idx_string
        SELECT m.pk, m.pid, i.resource_type, i.param,
               regexp_replace(i.value_norm, '^nom[0-9]+$', 'nom' || m.c),
               regexp_replace(i.value_exact, '^NOM[0-9]+$', 'NOM' || m.c)
        FROM scale_m m JOIN idx_string i ON i.resource_pk = m.tpk WHERE {part}""")
    timed(conn, label + "idx_date: DMPs", f"""INSERT INTO idx_date
        SELECT m.pk, m.pid, i.resource_type, i.param, i.low - m.shift,
               CASE WHEN i.high >= '9999-01-01' THEN i.high ELSE i.high - m.shift END
        FROM scale_m m JOIN idx_date i ON i.resource_pk = m.tpk WHERE {part}""")
    timed(conn, label + "idx_reference: DMPs", f"""INSERT INTO idx_reference
        SELECT m.pk, m.pid, i.resource_type, i.param, i.target_type,
               CASE WHEN i.param = 'author' AND i.target_id = m.tauthor THEN m.author
                    ELSE {hexed('i.target_id')} END, {hexed('i.url')}
        FROM scale_m m JOIN idx_reference i ON i.resource_pk = m.tpk WHERE {part}""")
    timed(conn, label + "idx_uri: DMPs", f"""INSERT INTO idx_uri
        SELECT m.pk, m.pid, i.resource_type, i.param, {hexed('i.uri')}
        FROM scale_m m JOIN idx_uri i ON i.resource_pk = m.tpk WHERE {part}""")
    for table in ("idx_number", "idx_quantity", "idx_composite"):  # no row in the template: nothing to clone
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
    timed(conn, label + "dmp_facts", f"""INSERT INTO dmp_facts
        SELECT m.pid, replace(replace(f.facts, m.tpid, m.pid), '"' || m.tins || '"', '"' || m.ins || '"')
        FROM scale_dm m JOIN dmp_facts f ON f.patient_key = m.tpid WHERE {part}""")
    timed(conn, label + "audit_chain", f"""INSERT INTO audit_chain
        SELECT m.pid, a.seq, a.head FROM scale_dm m JOIN audit_chain a ON a.patient_key = m.tpid WHERE {part}""")
    timed(conn, label + "index_pending", f"""INSERT INTO index_pending
        SELECT m.pid, m.pk, p.owner FROM scale_m m JOIN index_pending p ON p.resource_pk = m.tpk WHERE {part}""")


class Client:
    """One keep-alive HTTP connection to the server, a token per caller."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection(HOST, port, timeout=60)
        self.tokens = {name: mint_token(claims, secret=SECRET, ttl_seconds=86400)
                       for name, claims in (("system", {"actor": "system", "sub": "bench"}), ("médecin", DOCTOR))}

    def call(self, method: str, path: str, caller: str = "system", body: dict | None = None) -> tuple[int, dict]:
        headers = {"Authorization": f"Bearer {self.tokens[caller]}", "Accept": "application/fhir+json"}
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body), "application/fhir+json"
        self.conn.request(method, "/fhir/" + quote(path, safe="/?=&:,.-_$"), body=data, headers=headers)
        response = self.conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")

    def patient(self, i: int) -> str:
        status, found = self.call("GET", f"Patient?identifier={INS}|{ins(i)}")
        assert status == 200 and found.get("entry"), (i, found)
        return found["entry"][0]["resource"]["id"]


def verify(client: Client, sql: psycopg.Connection, dmps: int) -> None:
    """A médecin authorised (Consent, through the API) on cloned DMPs gets their documents; totals match SQL."""
    for i in (dmps - 1, dmps // 2 + 3):
        pid = client.patient(i)
        status, _ = client.call("POST", "Consent", body=authorisation(pid, DOCTOR["sub"]))
        assert status == 201, status
        total = f"DocumentReference?patient={pid}&_total=accurate&_count=100"
        counted = sql.execute("SELECT count(*), count(*) FILTER (WHERE labels = 0) FROM resource WHERE "
                              "patient_key = %s AND resource_type = 'DocumentReference'", (pid,)).fetchone()
        _, system = client.call("GET", total)
        status, doctor = client.call("GET", total, "médecin")
        assert status == 200 and system["total"] == counted[0], (system.get("total"), counted)
        assert 0 < doctor["total"] <= counted[0] and doctor["total"] == len(doctor.get("entry", []))
        assert all(e["resource"]["subject"]["reference"] == f"Patient/{pid}" for e in doctor["entry"])
        _, chain = client.call("GET", f"DocumentReference?patient.identifier={INS}|{ins(i)}&_total=accurate")
        print(f"  DMP {i}: SQL {counted[0]} documents ({counted[1]} unlabelled); system sees {system['total']}, "
              f"the authorised médecin {doctor['total']}; chain on the INS {chain['total']}")
        assert chain["total"] == counted[0]


def measure(client: Client, dmps: int, rounds: int, label: str) -> None:
    rng = random.Random(67)
    timings: dict[str, list[float]] = {}
    for n in range(rounds + 20):  # the first 20 DMPs warm the caches up, unmeasured
        i = rng.randrange(dmps)
        pid = client.patient(i)
        practitioner = f"8{rng.randrange(max(10, dmps // 20)):011d}"
        for name, query in queries(pid, ins(i), practitioner):
            started = time.perf_counter()
            status, body = client.call("GET", query)
            elapsed = (time.perf_counter() - started) * 1000
            assert status == 200, (query, body)
            if n >= 20:
                timings.setdefault(name, []).append(elapsed)
    print(f"-- {label}: {rounds} DMPs drawn at random, one request at a time over HTTP; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'query':28} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for name, values in timings.items():
        q = statistics.quantiles(values, n=100)
        print(f"{name:28} {statistics.median(values):8.2f} {q[94]:8.2f} {q[98]:8.2f}"
              + ("   MISSES 20 ms p95" if q[94] > 20 else ""), flush=True)


def sizes(sql: psycopg.Connection) -> None:
    rows = sql.execute("""SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'
        ORDER BY 2 DESC""").fetchall()
    docs = sql.execute("SELECT count(*) FROM resource WHERE resource_type = 'DocumentReference'").fetchone()[0]
    total = sum(size for _, size in rows)
    print(f"database size: {total / 1e9:.2f} GB for {docs} DocumentReferences: {total / docs / 1000:.2f} KB a "
          f"document (tables, their indexes and TOAST)")
    print("  " + ", ".join(f"{name} {size / docs:.0f} B" for name, size in rows if size > 100000))


def serve(fhir_url: str, logs: Path) -> Server:
    exe = Path(sys.executable).with_name("fhir-dmp")
    port = free_port()
    server = Server("scale", [str(exe) if exe.exists() else "fhir-dmp", "serve", "--front", "gunicorn", "--host",
                              HOST, "--port", str(port), "--database-url", fhir_url, "--workers", "2"],
                    {"FHIR_DMP_JWT_SECRET": SECRET}, port, "/fhir/metadata", logs).start()
    server.wait_ready()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--dmps", type=int, default=100000)
    parser.add_argument("--documents", type=int, default=10, help="DocumentReferences per DMP")
    parser.add_argument("--template", type=int, default=20, help="DMPs written through the write path")
    parser.add_argument("--rounds", type=int, default=200, help="DMPs drawn for the queries, per measure")
    parser.add_argument("--stale-rounds", type=int, default=40,
                        help="DMPs drawn before ANALYZE (a never-analysed 1M store answers some queries in seconds)")
    parser.add_argument("--schema", default=None, help="default: scale_<pid>, made fresh")
    parser.add_argument("--skip-load", action="store_true", help="measure the already loaded --schema")
    parser.add_argument("--analyze-at", type=int, default=0, help="ANALYZE once after this many DMPs (search.py's "
                        "--stale-statistics); default: never before the first measure")
    parser.add_argument("--forget-statistics", action="store_true",
                        help="with --skip-load: delete the schema's rows of pg_statistic first (superuser), the "
                             "planner's state after a load that was never analysed")
    parser.add_argument("--drop", action="store_true", help="drop the schema at the end")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill stops the server started here, like Ctrl-C
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C even when started in the background
    schema = args.schema or f"scale_{os.getpid()}"
    libpq, fhir_url = urls(args.database_url, schema)
    sql = psycopg.connect(libpq, options=f"-csearch_path={schema}", autocommit=True)  # each statement its own
    print(f"{datetime.now().isoformat(timespec='seconds')}; load average {os.getloadavg()[0]:.2f}; schema {schema}; "
          f"PostgreSQL {sql.execute('SHOW server_version').fetchone()[0]}; autovacuum "
          f"{sql.execute('SHOW autovacuum').fetchone()[0]}; {args.dmps} DMPs x {args.documents} documents")
    if not args.skip_load:
        sql.execute(f"CREATE SCHEMA {schema}")
        started = time.perf_counter()
        write_template(fhir_url, args.template, args.documents)
        template = time.perf_counter() - started
        print(f"template ({args.template} DMPs) through Pipeline.handle: {template:.1f} s; cloning:", flush=True)
        phases = clone(sql, args.dmps, args.analyze_at)
        elapsed = template + sum(phases.values())
        docs = args.dmps * args.documents
        print(f"loaded {docs} DocumentReferences in {elapsed:.0f} s ({docs / elapsed:.0f} a second): template "
              f"{template:.0f} s, maps {phases['maps']:.0f} s, INSERT ... SELECT {phases['insert']:.0f} s, "
              f"indexes and foreign keys {phases['indexes']:.0f} s", flush=True)
    if args.forget_statistics:
        sql.execute("DELETE FROM pg_statistic WHERE starelid IN (SELECT oid FROM pg_class WHERE relnamespace = "
                    "current_schema()::regnamespace)")
        sql.commit()
    sizes(sql)
    print("tables with statistics: " + str(sql.execute("SELECT count(DISTINCT starelid) FROM pg_statistic WHERE "
          "starelid IN (SELECT oid FROM pg_class WHERE relnamespace = current_schema()::regnamespace)").fetchone()[0]))
    logs = Path(tempfile.mkdtemp(prefix="fhir-dmp-scale-"))
    server = serve(fhir_url, logs)
    try:
        client = Client(server.port)
        verify(client, sql, args.dmps)
        measure(client, args.dmps, args.stale_rounds, "statistics as the load left them (no ANALYZE)")
        server.stop()
        started = time.perf_counter()
        analyze(sql)
        print(f"ANALYZE: {time.perf_counter() - started:.1f} s")
        server = serve(fhir_url, logs)
        measure(Client(server.port), args.dmps, args.rounds, "after ANALYZE")
    finally:
        server.stop()
    if args.drop:
        sql.execute(f"DROP SCHEMA {schema} CASCADE")
    sql.commit()
    sql.close()


if __name__ == "__main__":
    main()
