"""The idle-agent index and the queue book at scale: routing is O(log n), never a scan of the operation."""

from __future__ import annotations

import re
from collections.abc import Sequence

from callcontrol_fakes import OP, World

from callbridge.callcontrol.ids import random_ids
from callbridge.callcontrol.model import Agent
from callbridge.callcontrol.routing import IdleAgents, QueueBook


def test_idle_agents_longest_idle_first_ties_to_the_lowest_extension() -> None:
    idle = IdleAgents()
    idle.add(OP, "sales", "1003", 5.0)
    idle.add(OP, "sales", "1002", 5.0)
    idle.add(OP, "sales", "1001", 7.0)
    idle.add(OP, "vip", "1009", 1.0)
    always = lambda ext, since: True  # noqa: E731
    assert [idle.take(OP, "sales", always) for _ in range(4)] == ["1002", "1003", "1001", None]
    assert idle.take("0077", "sales", always) is None
    assert idle.take(OP, "vip", always) == "1009"


def test_idle_agents_newer_entry_supersedes_and_a_refused_agent_is_dropped() -> None:
    idle = IdleAgents()
    idle.add(OP, "sales", "1001", 1.0)
    idle.add(OP, "sales", "1001", 1.0)  # the same entry again: nothing added
    assert len(idle) == 1
    idle.add(OP, "sales", "1002", 2.0)
    idle.add(OP, "sales", "1001", 3.0)  # 1001 went back in line (rang out): its 1.0 entry is dead
    asked: list[tuple[str, float]] = []

    def check(ext: str, since: float) -> bool:
        asked.append((ext, since))
        return ext != "1002"  # 1002 is on a break now

    assert idle.take(OP, "sales", check) == "1001"
    assert asked == [("1002", 2.0), ("1001", 3.0)]  # the dead entry was never offered to the check
    assert len(idle) == 0 and idle.take(OP, "sales", check) is None  # 1002 was dropped: re-added when ready


def test_idle_agents_heap_of_dead_entries_is_rebuilt_in_order() -> None:
    idle = IdleAgents()
    for round_ in range(200):  # three agents ready/not ready over and over, nobody taken
        for ext in ("1001", "1002", "1003"):
            idle.add(OP, "sales", ext, float(round_ * 10 + int(ext[-1])))
    assert len(idle._heaps[(OP, "sales")]) <= 2 * 3 + 64
    always = lambda ext, since: True  # noqa: E731
    assert [idle.take(OP, "sales", always) for _ in range(4)] == ["1001", "1002", "1003", None]


def test_queue_book_removal_keeps_arrival_order() -> None:
    book = QueueBook()
    for i in range(1, 6):
        book.add(OP, "sales", f"c{i}")
    assert book.remove("c3") and book.remove("c1")
    assert book.waiting(OP, "sales") == ["c2", "c4", "c5"]
    assert book.oldest(OP, ["sales"], skip={"c2"}) == "c4"
    assert book.remove("c2") and book.remove("c4") and book.remove("c5")
    assert book.waiting(OP, "sales") == [] and book.oldest(OP, ["sales"]) is None


def test_random_ids_are_a_kind_letter_and_32_hex_digits_unique() -> None:
    ids = [random_ids("c") for _ in range(5000)]  # crosses several blocks of randomness
    assert all(re.fullmatch(r"c[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)


class CountingDirectory:
    """Wraps the fake directory and counts scans of an operation's agents."""

    def __init__(self, world: World) -> None:
        self.inner = world.directory
        self.scans = 0

    def list_agents(self, operation_id: str) -> Sequence[Agent]:
        self.scans += 1
        return self.inner.list_agents(operation_id)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_thousands_of_agents_each_call_goes_to_the_longest_idle_without_scanning_them() -> None:
    world = World(acw_seconds=0.0)
    extensions = [str(20000 + i) for i in range(3000)]
    for ext in extensions:
        world.directory.agents[(OP, ext)] = Agent(OP, ext, queues=("sales",))
    world.login(*extensions)  # idle times in this order
    counting = CountingDirectory(world)
    world.service._directory = counting  # type: ignore[assignment]
    offered = []
    for _ in range(50):
        world.inbound()
        offered.append(world.signalling.last_originate().destination)
    assert offered == extensions[:50]
    assert counting.scans == 0
    # the first agent answers and its call ends: it is ready again, and last in line
    first = world.offer_leg(extensions[0])
    world.service.on_leg_answered(first)
    world.service.on_leg_ended(first)
    assert world.state(extensions[0]) == "ready"
    world.inbound()
    assert world.signalling.last_originate().destination == extensions[50]
    assert counting.scans == 0


def test_an_agent_moved_to_another_queue_takes_its_calls_after_a_reindex() -> None:
    world = World()
    world.login("1001")
    world.directory.agents[(OP, "1001")] = Agent(OP, "1001", queues=("vip",))
    world.service.reindex_agents()
    world.inbound(did="5550199")  # the vip queue
    assert world.signalling.last_originate().destination == "1001"


def test_an_agent_leaving_a_queue_is_not_offered_its_calls() -> None:
    world = World()
    world.login("1001", "1002")
    world.directory.agents[(OP, "1001")] = Agent(OP, "1001", queues=("vip",))  # no reindex: checked when taken
    world.inbound()
    assert world.signalling.last_originate().destination == "1002"
