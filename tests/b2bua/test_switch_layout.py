"""The B2BUA's shape, checked on the source and on its tables: no helper imports the switch, the modules form no
import circle (TYPE_CHECKING imports included), no module outgrows one concept, and the leg table refuses what it
does not list."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from callbridge.b2bua.leg_state import TABLE, LegInput, LegState, LegStateError, step
from callbridge.b2bua.legs import LegTable, SipLeg
from callbridge.b2bua.refer import REFUSALS, refusal_status
from callbridge.callcontrol import errors

B2BUA = Path(__file__).resolve().parents[2] / "src" / "callbridge" / "b2bua"
MAX_LINES = 400


def _b2bua_imports(path: Path) -> set[str]:
    """The b2bua modules `path` imports, at run time or for type checking alike."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "callbridge.b2bua":
                names.update(alias.name for alias in node.names)
            elif node.module.startswith("callbridge.b2bua."):
                names.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[2] for a in node.names if a.name.startswith("callbridge.b2bua."))
    return names


def _graph() -> dict[str, set[str]]:
    return {path.stem: _b2bua_imports(path) for path in sorted(B2BUA.glob("*.py")) if path.stem != "__init__"}


def test_no_module_of_the_b2bua_imports_the_switch() -> None:
    assert {name for name, imports in _graph().items() if "switch" in imports} == set()


def test_the_b2bua_modules_import_each_other_without_a_circle() -> None:
    graph = _graph()
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, " -> ".join((*path, name))
        if name in done:
            return
        for imported in sorted(graph.get(name, ())):
            visit(imported, (*path, name))
        done.add(name)

    for module in graph:
        visit(module, ())


def test_the_checker_sees_a_circle(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("from callbridge.b2bua.switch import Switch\nfrom callbridge.b2bua import legs\n")
    assert _b2bua_imports(bad) == {"switch", "legs"}


def test_every_module_of_the_b2bua_holds_one_concept_in_at_most_400_lines() -> None:
    long = {path.name: n for path in B2BUA.glob("*.py") if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


# --- the leg table ------------------------------------------------------------------------------------------------

def test_a_leg_is_answered_then_released_then_ended_by_its_dialog() -> None:
    table = LegTable()
    leg = table.add(SipLeg("l1", "0042", "out", 0.0, state=LegState.CALLING))
    assert step(leg, LegInput.PROVISIONAL) is LegState.CALLING and leg.state is LegState.EARLY
    assert step(leg, LegInput.ANSWERED) is LegState.EARLY and leg.state is LegState.UP
    assert step(leg, LegInput.RELEASE) is LegState.UP and leg.state is LegState.RELEASING
    assert leg.released and not leg.forking
    assert table.end(leg, LegInput.DIALOG_ENDED) is LegState.RELEASING
    assert leg.state is LegState.ENDED and table.get("l1") is None and len(table) == 0


@pytest.mark.parametrize(("state", "event"), [
    (LegState.INCOMING, LegInput.PROVISIONAL),  # an incoming leg does not ring through us
    (LegState.CALLING, LegInput.CANCELLED),  # nobody CANCELs an INVITE we sent
    (LegState.UP, LegInput.ANSWERED),  # a second 2xx is handled before any step (ACK and BYE)
    (LegState.RELEASING, LegInput.RELEASE),  # the domain lets go once
    (LegState.ENDED, LegInput.ANSWERED),
])
def test_an_input_the_table_does_not_list_is_an_error_and_moves_nothing(state: LegState, event: LegInput) -> None:
    leg = SipLeg("l1", "0042", "in", 0.0, state=state)
    assert event not in TABLE[state]
    with pytest.raises(LegStateError, match=f"leg l1: {event} in {state}"):
        step(leg, event)
    assert leg.state is state


def test_only_the_tables_end_inputs_lead_to_ended_and_ended_only_absorbs() -> None:
    for state, row in TABLE.items():
        for event, nxt in row.items():
            if state is LegState.ENDED:
                assert nxt is LegState.ENDED
            elif nxt is LegState.ENDED:
                assert event in (LegInput.FAILED, LegInput.CANCELLED, LegInput.REFUSED, LegInput.RELEASE,
                                 LegInput.DIALOG_ENDED)
    assert set(TABLE[LegState.ENDED]) == {LegInput.FAILED, LegInput.DIALOG_ENDED}


def test_ending_a_leg_by_an_input_that_does_not_end_it_is_refused() -> None:
    table = LegTable()
    leg = table.add(SipLeg("l1", "0042", "in", 0.0, state=LegState.UP))
    with pytest.raises(AssertionError):
        table.end(leg, LegInput.RELEASE)  # UP + RELEASE is RELEASING: the BYE still has to go


# --- the REFER refusals -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("error", "expected"), [
    (errors.TargetNotAvailable(), (480, "Transfer Target Not Available")),
    (errors.TransferInProgress(), (403, "Transfer In Progress")),
    (errors.TransferLimit(), (403, "Too Many Transfers")),
    (errors.NumberNotAllowed("customer_phone"), (403, "Number Not Allowed")),
    (errors.InvalidParameter("target"), (404, "Not Found")),
    (errors.CallControlUnavailable(), (503, "Service Unavailable")),
    (errors.AgentNotLoggedIn(), (403, "Agent Not Logged In")),
    (errors.NoActiveCall(), (403, "No Active Call")),
    (errors.AlreadyOnCall(), (403, "No Active Call")),  # any other refusal
])
def test_a_domain_refusal_is_answered_from_the_table(error: errors.CallControlError,
                                                     expected: tuple[int, str]) -> None:
    assert refusal_status(error) == expected
    assert all(400 <= status < 700 for status, _ in REFUSALS.values())
