"""The planner's table of cases (callbridge/cluster/planner.py), one test per row, in memory."""

from __future__ import annotations

import pytest

from callbridge.cluster.planner import Action, LeaseView, NodeView, Step, plan

A, B, C = NodeView("a"), NodeView("b"), NodeView("c")


def steps(me: str = "a", *, draining: bool = False, operations: tuple[str, ...] = (),
          leases: dict[str, LeaseView] | None = None, live: tuple[NodeView, ...] = (A, B),
          held: dict[str, int] | None = None) -> list[tuple[Action, str, int | None]]:
    result = plan(me, draining=draining, operations=operations, leases=leases or {}, live_nodes=live,
                  held=held or {})
    return [(s.action, s.operation_id, s.epoch) for s in result]


def test_a_held_live_lease_is_renewed() -> None:
    assert steps(operations=("1",), leases={"1": LeaseView("a", 4, False)}, held={"1": 4}) == [
        (Action.RENEW, "1", 4)]


def test_a_draining_node_releases_what_it_holds_and_takes_nothing() -> None:
    leases = {"1": LeaseView("a", 4, False), "2": LeaseView(None, 2, True)}
    assert steps(draining=True, operations=("1", "2"), leases=leases, held={"1": 4}) == [(Action.RELEASE, "1", 4)]


def test_a_handover_to_a_live_node_releases() -> None:
    assert steps(operations=("1",), leases={"1": LeaseView("a", 4, False, move_to="b")}, held={"1": 4}) == [
        (Action.RELEASE, "1", 4)]


def test_a_handover_to_a_dead_or_draining_node_keeps_the_lease() -> None:
    lease = {"1": LeaseView("a", 4, False, move_to="c")}
    assert steps(operations=("1",), leases=lease, held={"1": 4}) == [(Action.RENEW, "1", 4)]
    assert steps(operations=("1",), leases=lease, held={"1": 4}, live=(A, B, NodeView("c", draining=True))) == [
        (Action.RENEW, "1", 4)]


@pytest.mark.parametrize("row", [LeaseView("b", 5, False), LeaseView("a", 5, False), LeaseView("a", 4, True),
                                 LeaseView(None, 4, True), None])
def test_a_held_lease_that_changed_hands_expired_or_vanished_is_lost(row: LeaseView | None) -> None:
    leases = {} if row is None else {"1": row}
    assert steps(operations=("1",), leases=leases, held={"1": 4}) == [(Action.LOST, "1", 4)]


def test_a_live_lease_of_another_node_is_left_alone_sticky_even_when_that_node_is_busier() -> None:
    leases = {str(i): LeaseView("b", 1, False) for i in range(5)}
    assert steps(operations=tuple(leases), leases=leases) == []


def test_a_live_lease_of_this_node_from_a_previous_process_is_adopted() -> None:
    assert steps(operations=("1",), leases={"1": LeaseView("a", 3, False)}) == [(Action.TAKE, "1", None)]


def test_free_operations_go_to_the_least_loaded_node_ties_by_id() -> None:
    leases = {"x": LeaseView("a", 1, False), "1": LeaseView(None, 1, True), "2": LeaseView("c", 9, True)}
    # b has nothing: it gets "1"; then a and b have one each: "2" goes to a (tie by id); "3" (no row) to b.
    assert steps("a", operations=("x", "1", "2", "3"), leases=leases, held={"x": 1}) == [
        (Action.TAKE, "2", None), (Action.RENEW, "x", 1)]
    assert steps("b", operations=("x", "1", "2", "3"), leases=leases) == [
        (Action.TAKE, "1", None), (Action.TAKE, "3", None)]


def test_two_nodes_starting_together_split_the_operations() -> None:
    ops = ("1", "2", "3", "4")
    mine_a = {s[1] for s in steps("a", operations=ops)}
    mine_b = {s[1] for s in steps("b", operations=ops)}
    assert (mine_a, mine_b) == ({"1", "3"}, {"2", "4"})


def test_expired_leases_count_for_nobody_and_are_placed() -> None:
    leases = {"1": LeaseView("b", 2, True), "2": LeaseView("b", 2, True)}
    assert steps("a", operations=("1", "2"), leases=leases) == [(Action.TAKE, "1", None)]


def test_a_free_lease_with_a_handover_target_goes_to_that_target_only() -> None:
    leases = {"1": LeaseView(None, 3, True, move_to="b")}
    assert steps("a", operations=("1",), leases=leases) == []
    assert steps("b", operations=("1",), leases=leases) == [(Action.TAKE, "1", None)]


def test_a_free_lease_whose_target_is_gone_is_placed_as_usual() -> None:
    leases = {"1": LeaseView(None, 3, True, move_to="c")}
    assert steps("a", operations=("1",), leases=leases) == [(Action.TAKE, "1", None)]


def test_draining_nodes_get_no_placement() -> None:
    live = (A, NodeView("b", draining=True))
    assert steps("a", operations=("1", "2"), live=live) == [(Action.TAKE, "1", None), (Action.TAKE, "2", None)]
    assert steps("b", operations=("1", "2"), live=live) == []


def test_no_live_node_places_nothing() -> None:
    assert steps("a", operations=("1",), live=()) == []


def test_step_is_a_value() -> None:
    assert Step(Action.TAKE, "1", None) == Step(Action.TAKE, "1", None)
