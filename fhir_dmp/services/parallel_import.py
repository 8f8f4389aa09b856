"""`fhir-dmp import --workers N`: an import spread over N processes, for a machine whose cores one Python process
cannot keep busy (parsing, validation and indexing are per-resource Python: about 1.3 ms a resource).

Each process is an `Importer` of its own (its pipeline, its connections): every batch is a unit of work as in a
serial import, with the same validation, policy and trace, and the same idempotence, so that a crashed parallel
import is resumed by running it again (serially or not). What changes is the order, in three phases:

1. the Patients (the DMPs others name by INS), serially, in file order;
2. every other single resource, in batches shared among the N processes (a batch never waits for another);
3. the transaction Bundles, and any line whose type cannot be read from its start, serially, in file order.

So a parallel import suits files whose non-Patient lines do not depend on each other (a document replacing
another of the same file, a Bundle that the lines after it rely on): import those serially (`--workers 1`).
"""

from __future__ import annotations

import multiprocessing
import re
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path

from fhir_dmp.config import Settings
from fhir_dmp.services.importing import Importer, Line, Report, read_lines
from fhir_dmp.storage.db import Database

# A line's type read from its first member, as NDJSON exporters write it (`{"resourceType":"Patient",...`); a line
# written otherwise goes to the serial last phase, where it is parsed and judged as in a serial import.
_TYPE = re.compile(rb'\s*\{\s*"resourceType"\s*:\s*"([A-Za-z]+)"')
_PATIENTS, _SHARED, _LAST = range(3)


def phase_of(line: Line) -> int:
    found = _TYPE.match(line.text)
    if found is None or found.group(1) == b"Bundle":
        return _LAST
    return _PATIENTS if found.group(1) == b"Patient" else _SHARED


def run(db: Database, settings: Settings, base_url: str, batch: int, paths: list[Path], workers: int,
        advance: Callable[[int], None] = lambda _n: None) -> Report:
    """Import `paths` in the three phases, the second with `workers` processes; one report for the whole."""
    serial = Importer(db, settings, base_url, batch)
    report = serial.report
    report.files += [str(p) for p in paths]
    context = multiprocessing.get_context("spawn")  # a fork would share the parent's pooled connections
    # the workers start (imports, terminologies, profiles: a second or two) while the Patients are stored
    with context.Pool(workers, initializer=_start, initargs=(settings, base_url, batch)) as pool:
        _serially(serial, _lines(paths, _PATIENTS), advance)
        for part in pool.imap_unordered(_import, _chunks(_lines(paths, _SHARED), batch)):
            _merge(report, part)
            advance(part.read)
    _serially(serial, _lines(paths, _LAST), advance)
    return report


def _lines(paths: list[Path], phase: int) -> Iterator[Line]:
    return (line for line in read_lines(paths) if phase_of(line) == phase)


def _chunks(lines: Iterator[Line], size: int) -> Iterator[list[Line]]:
    while chunk := list(islice(lines, size)):
        yield chunk


def _serially(importer: Importer, lines: Iterator[Line], advance: Callable[[int], None]) -> None:
    for chunk in _chunks(lines, importer.batch):
        importer.import_lines(chunk)
        advance(len(chunk))


def _merge(report: Report, part: Report) -> None:
    report.read += part.read
    report.created += part.created
    report.skipped += part.skipped
    report.refused += part.refused


_WORKER: list[Importer] = []  # the worker process's importer (one a process, made by `_start`)


def _start(settings: Settings, base_url: str, batch: int) -> None:
    _WORKER.append(Importer(Database(settings.database_url), settings, base_url, batch))


def _import(chunk: list[Line]) -> Report:
    """One batch in the worker's importer; what it did (the worker's report is reset for the next one)."""
    importer = _WORKER[0]
    importer.report = Report()
    importer.import_lines(chunk)
    return importer.report
