"""Signed checkpoints of the trace chains (docs/audit.md): `fhir-dmp audit seal` and `fhir-dmp audit verify`.

The hash chains show a change only to whoever still holds the true head: a database writer can delete a chain with
its head row, or alter an event and recompute every later link and the head with plain SHA-256. A checkpoint closes
that: it names, for every chain changed since the previous checkpoint, its head (seq, hash) and its count of events,
with its time, the previous checkpoint's hash (checkpoints are chained too) and the id of the Ed25519 key that signs
its canonical JSON. The key lives outside the database, so no database writer can produce a checkpoint; each chain's
sealed state is the fold of the checkpoints in number order (a checkpoint holds the changes since the previous one,
so its size follows the traffic, not the number of DMPs).

Verification: the checkpoint chain is whole (numbers 1..n, each naming its predecessor's hash) and every signature
checks with a known key; every sealed chain still exists (or a purge event on the server's chain accounts for it),
holds at least its sealed count of events, and its event number `seq` still hashes to the sealed head. Events
after the last checkpoint are checked by their hash links only.

The seal checks before it signs (it never endorses a tampered chain): each changed chain's events from its sealed
event on, each unchanged chain's count of events, each sealed chain's presence.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fhir_dmp import fhirjson
from fhir_dmp.search.dates import instant, now_utc
from fhir_dmp.services.audit import Broken, chain_link, digest, first_break
from fhir_dmp.services.signing import Signer, canonical, check
from fhir_dmp.storage import checkpoints, traces
from fhir_dmp.storage.db import Database, Tx
from fhir_dmp.storage.records import GENESIS

Rows = list[tuple[str, str | None]]


@dataclass(frozen=True)
class Sealed:
    """A chain as the checkpoints seal it."""

    seq: int
    head: str
    count: int
    checkpoint: int


@dataclass
class Checkpoints:
    """The checkpoint chain as read and checked: the sealed state (folded from every checkpoint that checks), the
    problems found, the last checkpoint's number, hash and body."""

    state: dict[str, Sealed] = field(default_factory=dict)
    problems: list[dict] = field(default_factory=list)
    number: int = 0
    hash: str = GENESIS
    latest: dict | None = None


class Refused(Exception):
    """The seal found the trail already broken: it signs nothing (the problems, as verify reports them)."""

    def __init__(self, problems: list[dict]) -> None:
        super().__init__(f"{len(problems)} problem(s)")
        self.problems = problems


def _problem(number: int, reason: str) -> dict:
    return {"checkpoint": number, "ok": False, "reason": reason}


def read_checkpoints(rows: list[tuple[int, str, str]], keys: dict[str, Ed25519PublicKey],
                     directory: Path | None = None) -> Checkpoints:
    """Check the checkpoint chain and fold the sealed state from the checkpoints whose signature checks."""
    found = Checkpoints()
    if rows and not keys:
        found.problems.append(_problem(rows[-1][0], "the checkpoints cannot be checked: no verification key "
                                       "(FHIR_DMP_AUDIT_VERIFY_KEYS or FHIR_DMP_AUDIT_SIGNING_KEY)"))
        return found
    for number, text, signature in rows:
        expected = found.number + 1
        try:
            body = json.loads(text)
            assert isinstance(body, dict)
        except (ValueError, AssertionError):
            body = {}
        if number != expected:
            found.problems.append(_problem(expected, f"checkpoint(s) {expected}..{number - 1} missing from the "
                                                     "checkpoint chain (deleted)"))
        elif body.get("previous") != found.hash:
            found.problems.append(_problem(number, f"its 'previous' hash does not match checkpoint {number - 1} "
                                                   "(that checkpoint was altered or replaced)"))
        key = keys.get(str(body.get("key_id")))
        if key is None:
            found.problems.append(_problem(number, f"signed by key {body.get('key_id')!r}, which is not among the "
                                                   "verification keys (a forged checkpoint, or a key not listed)"))
        elif not check(key, text, signature) or body.get("checkpoint") != number:
            found.problems.append(_problem(number, "its signature does not verify (the checkpoint was altered)"))
        else:
            _fold(found, body, number)
        found.number, found.hash = number, checkpoint_hash(text)
    if directory is not None:
        found.problems += _compare_directory(directory, {n: (t, s) for n, t, s in rows})
    return found


def checkpoint_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _fold(found: Checkpoints, body: dict, number: int) -> None:
    try:
        for key, seq, head, count in body["chains"]:
            found.state[key] = Sealed(int(seq), str(head), int(count), number)
        for key in body["removed"]:
            found.state.pop(key, None)
    except (KeyError, TypeError, ValueError):
        found.problems.append(_problem(number, "a signed checkpoint this version cannot read"))
        return
    if not found.problems and body.get("sealed_chains") != len(found.state):  # (after a problem, meaningless)
        found.problems.append(_problem(number, f"it seals {body.get('sealed_chains')} chains where the checkpoints "
                                               f"up to it name {len(found.state)} (a checkpoint before it is missing)"))
    found.latest = body


# -- the append-only copy --------------------------------------------------------------------------------------
def _file(directory: Path, number: int) -> Path:
    return directory / f"checkpoint-{number:012d}.json"


def write_file(directory: Path, number: int, text: str, signature: str) -> Path:
    """Copy a checkpoint into the append-only directory (created once, read-only, never overwritten)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = _file(directory, number)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(canonical({"number": number, "body": text, "signature": signature}) + "\n")
    return path


def _compare_directory(directory: Path, stored: dict[int, tuple[str, str]]) -> list[dict]:
    """Every checkpoint in the directory must be in the database, identical (a database rolled back past its
    latest checkpoints, or stripped of all of them, shows here)."""
    problems = []
    for path in sorted(directory.glob("checkpoint-*.json")):
        try:
            copy = json.loads(path.read_text(encoding="utf-8"))
            number, text, signature = int(copy["number"]), str(copy["body"]), str(copy["signature"])
        except (OSError, ValueError, KeyError, TypeError):
            problems.append(_problem(0, f"{path.name}: an unreadable checkpoint file"))
            continue
        if number not in stored:
            problems.append(_problem(number, f"in {path} but not in the database (deleted)"))
        elif stored[number] != (text, signature):
            problems.append(_problem(number, f"differs from its copy {path} (altered)"))
    return problems


# -- chains against the seal -------------------------------------------------------------------------------------
def sealed_break(key: str, rows: Rows, sealed: Sealed) -> Broken | None:
    """A chain (every stored event, in writing order) against its sealed state."""
    if len(rows) < max(sealed.seq, sealed.count):
        return Broken(key, "(sealed)", f"checkpoint {sealed.checkpoint} sealed {sealed.count} events; only "
                                       f"{len(rows)} are stored (events were deleted)")
    if sealed.seq == 0:
        return None
    rid, text = rows[sealed.seq - 1]
    if (chain_link(text) or (0, ""))[0] != sealed.seq or digest(text or "") != sealed.head:
        return Broken(key, rid, f"the event stored as number {sealed.seq} does not hash to the head checkpoint "
                                f"{sealed.checkpoint} sealed: an event up to it was altered, inserted or deleted "
                                "(and the later links re-hashed)")
    return None


def purge_record(server_rows: Rows, key: str, sealed: Sealed) -> str | None:
    """The id of the purge event (`fhir-dmp purge`, on the server's chain) that removed the chain `key` at or after
    its sealed state, None when there is none."""
    for rid, text in server_rows:
        if f"Patient/{key}" not in (text or ""):
            continue
        body = fhirjson.loads(text or "{}")
        for entity in body.get("entity", []) if body.get("action") == "D" else []:
            if entity.get("what", {}).get("reference") != f"Patient/{key}":
                continue
            for detail in entity.get("detail", []):
                if detail.get("type") != "audit-chain-head":
                    continue
                seq, _, head = str(detail.get("valueString", "")).partition(" ")
                if seq.isdigit() and (int(seq) > sealed.seq or (int(seq), head) == (sealed.seq, sealed.head)):
                    return rid
    return None


def _gone(key: str, sealed: Sealed) -> Broken:
    return Broken(key, "(chain)", f"checkpoint {sealed.checkpoint} sealed this chain at event {sealed.seq}; it is gone "
                                  "with its head and no purge accounts for it (deleted)")


# -- verify ------------------------------------------------------------------------------------------------------
def verify(db: Database, keys: dict[str, Ed25519PublicKey],
           directory: Path | None = None) -> tuple[Checkpoints, Iterator[dict]]:
    """The checkpoint chain as checked, and one JSON-ready line per problem of it and per chain (today's lines:
    chain, events, ok; broken_at and reason when not ok)."""
    with db.transaction() as conn:
        found = read_checkpoints(checkpoints.read_all(conn), keys, directory)
    return found, _lines(db, found)


def _lines(db: Database, found: Checkpoints) -> Iterator[dict]:
    yield from found.problems
    with db.transaction() as conn:
        keys = traces.audit_chains(conn)
    server: Rows = []
    for key in sorted(keys):
        with db.snapshot() as conn:
            head = traces.chain_head(conn, key)
            rows = traces.audit_contents(conn, key)
        if key == "":
            server = rows
        fault = first_break(key, rows, head)
        sealed = found.state.get(key)
        seal_fault = sealed_break(key, rows, sealed) if sealed else None
        line: dict = {"chain": key or "(server)", "events": len(rows), "ok": fault is None and seal_fault is None}
        if fault or seal_fault:
            first = fault or seal_fault
            assert first is not None
            line.update({"broken_at": first.event or "(head)", "reason": first.reason})
            if fault and seal_fault:
                line["sealed"] = f"{seal_fault.event}: {seal_fault.reason}"
        yield line
    for key in sorted(set(found.state) - keys):
        purge = purge_record(server, key, found.state[key])
        if purge:
            yield {"chain": key or "(server)", "events": 0, "ok": True, "purged_by": purge}
        else:
            gone = _gone(key, found.state[key])
            yield {"chain": key or "(server)", "events": 0, "ok": False, "broken_at": gone.event,
                   "reason": gone.reason}


# -- seal --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sealing:
    """What a seal did: the checkpoint written (its number and body), or why none was (`skipped`)."""

    number: int = 0
    body: dict | None = None
    skipped: str = ""
    file: Path | None = None


def seal(db: Database, signer: Signer, keys: dict[str, Ed25519PublicKey], directory: Path | None = None) -> Sealing:
    """Check what changed since the last checkpoint and seal it in a new checkpoint; raises `Refused` when the trail
    is already broken (nothing is signed then)."""
    keys = {**keys, signer.key_id: signer.public}
    with db.snapshot(write=True) as conn:
        if not checkpoints.claim_seal(conn):
            return Sealing(skipped="another process is sealing")
        found = read_checkpoints(checkpoints.read_all(conn), keys, directory)
        if found.problems:
            raise Refused(found.problems)
        current = checkpoints.chain_states(conn)
        headless = traces.audit_chains(conn) - set(current)
        problems = [_line(Broken(k, "(head)", "the chain has events but no head row (the head was removed)"))
                    for k in sorted(headless)]
        changed = []
        for key, (seq, head, count) in sorted(current.items()):
            old = found.state.get(key)
            if old is not None and (old.seq, old.head) == (seq, head):
                if count != old.count:
                    problems.append(_line(Broken(key, "(chain)", f"{count} events stored where checkpoint "
                                                 f"{old.checkpoint} sealed {old.count} under the same head "
                                                 "(events inserted or deleted)")))
                continue
            fault = _changed_break(conn, key, (seq, head), count, old)
            if fault:
                problems.append(_line(fault))
            else:
                changed.append([key, seq, head, count])
        removed, server = [], None
        for key in sorted(set(found.state) - set(current)):
            server = server if server is not None else checkpoints.events_from(conn, "", 1)
            if purge_record(server, key, found.state[key]):
                removed.append(key)
            elif key not in headless:
                problems.append(_line(_gone(key, found.state[key])))
        if problems:
            raise Refused(problems)
        if not changed and not removed:
            return Sealing(number=found.number, skipped=f"nothing changed since checkpoint {found.number}")
        number = found.number + 1
        body = {"checkpoint": number, "sealed_at": instant(now_utc()), "previous": found.hash,
                "key_id": signer.key_id, "chains": changed, "removed": removed,
                "sealed_chains": len(set(found.state) - set(removed) | {c[0] for c in changed})}
        text = canonical(body)
        signature = signer.sign(text)
        if not checkpoints.insert(conn, number, text, signature):
            return Sealing(skipped=f"another process wrote checkpoint {number} meanwhile")
    path = write_file(directory, number, text, signature) if directory is not None else None
    return Sealing(number=number, body=body, file=path)


def _changed_break(conn: Tx, key: str, head: tuple[int, str], count: int, old: Sealed | None) -> Broken | None:
    """A chain whose head moved since it was sealed: its sealed event still there, the links from it to the head."""
    if count != head[0]:
        return Broken(key, "(chain)", f"{count} events stored under a head numbered {head[0]} (events inserted or "
                                      "deleted)")
    if old is None or old.seq == 0:
        return first_break(key, checkpoints.events_from(conn, key, 1), head)
    rows = checkpoints.events_from(conn, key, old.seq)
    if not rows:
        return Broken(key, "(sealed)", f"checkpoint {old.checkpoint} sealed {old.seq} events; fewer are stored")
    rid, text = rows[0]
    if (chain_link(text) or (0, ""))[0] != old.seq or digest(text or "") != old.head:
        return sealed_break(key, [("", None)] * (old.seq - 1) + rows, old)
    return first_break(key, rows[1:], head, start=(old.seq, old.head, rid))


def _line(fault: Broken) -> dict:
    return {"chain": fault.chain or "(server)", "ok": False, "broken_at": fault.event or "(head)",
            "reason": fault.reason}
