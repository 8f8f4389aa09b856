"""The guarded HTTP client of the delivery worker, attacked: internal addresses in every spelling, names resolving
to this machine, receivers that trickle or never answer, and what a failure tells the subscription's owner."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from fhir_dmp.services import endpoints
from tests.fhirclient import DOCTOR, json_of
from tests.receiver import Receiver
from tests.services import subscribing
from tests.services.subscribing import World, subscription

world = subscribing.world
receiver = subscribing.receiver


@pytest.mark.parametrize("endpoint", [
    "https://127.0.0.1/hook", "https://[::1]/hook", "https://[::ffff:127.0.0.1]/hook", "https://2130706433/hook",
    "https://0x7f000001/hook", "https://0177.0.0.1/hook", "https://127.1/hook", "https://0/hook",
    "https://10.1.2.3/hook", "https://192.168.0.1/hook", "https://169.254.169.254/latest", "https://[fe80::1]/hook",
    "https://[fc00::1]/hook", "https://localhost/hook", "https://api.localhost/hook", "https://224.0.0.1/hook",
])
def test_an_internal_address_is_refused_whatever_its_spelling_unless_the_operator_names_it(endpoint: str):
    assert endpoints.address_refusal(endpoint, None) is not None
    assert endpoints.address_refusal(endpoint, "https://,http://127.0.0.1") is not None
    assert endpoints.address_refusal("http://127.0.0.1:8081/hook", "https://,http://127.0.0.1") is None
    assert endpoints.address_refusal("https://ehr.example.org/hook", None) is None
    assert endpoints.address_refusal("https://93.184.216.34/hook", None) is None


def test_a_subscription_to_an_internal_address_is_a_422(world: World):
    answer = world.as_(DOCTOR).post("Subscription", subscription("https://2130706433/hook",
                                                                 f"DocumentReference?patient=Patient/{world.pid}"))
    assert answer.status_code == 422 and "Subscription.channel.endpoint" in str(json_of(answer))


@pytest.fixture
def local_name() -> str:
    """A name (not an IP, not `localhost`: refused as written) the resolver takes to this machine."""
    for name in (socket.gethostname(), "localhost.", "ip6-localhost"):
        try:
            found = {a[4][0] for a in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)}
        except OSError:
            continue
        if found and found <= {"127.0.0.1"} and endpoints.address_refusal(f"http://{name}/", "http://") is None:
            return name
    pytest.skip("no name resolves to 127.0.0.1 here")


def test_a_name_resolving_to_this_machine_reaches_nothing_when_only_a_scheme_allows_it(receiver: Receiver,
                                                                                       local_name: str):
    url = f"http://{local_name}:{receiver.port}/hook"
    sent = endpoints.post(url, b"{}", {}, 2, "http://")  # allowed by the scheme only: no named host
    assert not sent.ok and sent.error == endpoints.UNREACHABLE
    assert receiver.received == []
    assert endpoints.post(receiver.url, b"{}", {}, 2, "http://127.0.0.1").ok  # the operator named that host


class Hostile:
    """A receiver that accepts and then trickles its answer, one byte at a time, each within the timeout."""

    def __init__(self, pace: float) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.pace = pace
        self.stop = threading.Event()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self.trickle, args=(conn,), daemon=True).start()

    def trickle(self, conn: socket.socket) -> None:
        with conn:
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000:
                if self.stop.is_set():
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return
                time.sleep(self.pace)

    def close(self) -> None:
        self.stop.set()
        self.server.close()


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    h = Hostile(0.2)
    yield h
    h.close()


def test_a_trickling_receiver_holds_the_worker_no_longer_than_its_deadline(hostile: Hostile):
    started = time.monotonic()
    sent = endpoints.post(f"http://127.0.0.1:{hostile.port}/hook", b"{}", {}, 1, "http://127.0.0.1")
    assert not sent.ok and sent.error == endpoints.UNREACHABLE
    assert time.monotonic() - started < 4  # 2 x its timeout, and a little


def test_a_failure_tells_the_owner_nothing_of_the_network(world: World, receiver: Receiver):
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nobody listens there: the socket's own message would say "Connection refused"
    sid = world.subscribe(DOCTOR, f"http://127.0.0.1:{port}/hook")
    world.deliver()
    shown = json_of(world.as_(DOCTOR).get(f"Subscription/{sid}"))
    assert shown["status"] == "error"
    assert "refused" not in str(shown).lower() and "errno" not in str(shown).lower()
    assert endpoints.UNREACHABLE in shown["error"]


def test_a_header_the_wire_cannot_carry_is_refused_at_creation(world: World, receiver: Receiver):
    body = subscription(receiver.url, f"DocumentReference?patient=Patient/{world.pid}",
                        channel_header=["X-Receiver: \u2603"])
    answer = world.as_(DOCTOR).post("Subscription", body)
    assert answer.status_code == 422 and "Subscription.channel.header" in str(json_of(answer))


def test_a_receiver_that_never_answers_does_not_hold_another_subscriptions_notifications(world: World,
                                                                                          receiver: Receiver):
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel's backlog) and never answers
    try:
        slow = subscription(f"http://127.0.0.1:{silent.getsockname()[1]}/hook",
                            f"DocumentReference?patient=Patient/{world.pid}")
        slow["channel"]["extension"] = [{"url": subscribing.BACKPORT + "backport-timeout", "valueUnsignedInt": 30}]
        assert world.as_(DOCTOR).post("Subscription", slow).status_code == 201
        world.subscribe(DOCTOR, receiver.url)
        stop = threading.Event()
        threading.Thread(target=world.worker.run, args=(stop,), daemon=True).start()
        try:
            receiver.wait_for(lambda: receiver.of_type("handshake"), seconds=5)  # not after the 60 s of the other
        finally:
            stop.set()
    finally:
        silent.close()


def test_one_owners_silent_receivers_cannot_take_every_slot(world: World, receiver: Receiver):
    from fhir_dmp.services.delivery import CLAIM

    silent = socket.create_server(("127.0.0.1", 0), backlog=64)
    try:
        for _ in range(2 * CLAIM):  # more than every slot, claimed before the other's whatever the order
            world.subscribe(DOCTOR, f"http://127.0.0.1:{silent.getsockname()[1]}/hook")
        world.subscribe(subscribing.KINE, receiver.url)
        stop = threading.Event()
        threading.Thread(target=world.worker.run, args=(stop,), daemon=True).start()
        try:
            receiver.wait_for(lambda: receiver.of_type("handshake"), seconds=8)
        finally:
            stop.set()
    finally:
        silent.close()
