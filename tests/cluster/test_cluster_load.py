"""The cluster under a load of calls (issue #15's "Tests that must exist", in a bounded form):

- `kill -9` of a node with N_CALLS connected calls up: the other node adopts every one of them within the lease's
  bound, each stays up (two of them carry tones both ways, and each party still hears the other's after the
  death), its API hangs every one up, every agent stays registered and every CDR is complete and written by the
  adopting node. N_CALLS is the issue's 50: the test takes 8 to 15 s (start-up excluded) on these shared 2-core
  machines (its output prints the set-up, adoption and hang-up times).
- a rolling restart through Kamailio: nodes a, b and c (127.0.0.11-13), a steady load of customers calling the DID
  through Kamailio (each call held 3 s, then hung up by the customer through Kamailio), while each node in turn
  gives the operation away with its calls and restarts: a by `callbridge admin cluster drain`, b by `callbridge
  admin cluster move` to c, c by SIGTERM (which hands its operations over). No call is dropped: every call
  answered is ended by its customer, its agent hears the BYE, and its CDR says so; the only calls not answered are
  the attempts refused with 503 (Retry-After, from Kamailio itself) while an operation changes hands, which the
  customers retry.

Every process is started by the test and stopped by its PID; all traffic is on loopback."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

CLUSTER = Path(__file__).resolve().parent
if str(CLUSTER) not in sys.path:
    sys.path.insert(0, str(CLUSTER))

from cluster_nodes import Serve, loaded_database  # noqa: E402
from cluster_world import AGENTBOX, CUSTOMER, DID, LEASE, NODE_A, NODE_B, OP, World, operation_doc, until  # noqa: E402
from kamailio_proxy import Proxy  # noqa: E402

from callbridge.phone import CallEnded, CallError, Phone  # noqa: E402

# serial: adoption within the lease's bound and a steady call load need the machine to themselves (scripts/test).
pytestmark = [pytest.mark.postgres, pytest.mark.serial]

N_CALLS = 50
AGENT_HOST, PROXY, NODE_C = "127.0.0.14", "127.0.0.10", "127.0.0.13"
CUSTOMER_HZ, AGENT_HZ = 1000.0, 700.0


async def ready(world: World, node: Serve, extensions: list[str]) -> None:
    async with httpx.AsyncClient(base_url=node.http, timeout=10, trust_env=False) as client:
        for ext in extensions:
            answer = await client.post(AGENTBOX, params={"api": "change_status", "agent_id": ext, "status": "ready"},
                                       headers={"wolkvox-token": world.token, "wolkvox_server": OP})
            assert answer.status_code == 200, answer.text


@pytest.mark.timeout(150)
async def test_kill_9_of_a_node_with_many_calls_up_every_call_is_adopted_kept_and_ended(
        postgres_url: str, tmp_path: Path) -> None:
    extensions = [str(2001 + i) for i in range(N_CALLS)]
    with loaded_database(postgres_url, operation_doc(extensions, concurrency_limit=8)) as (url, [token]):
        world = World(url, token, tmp_path)
        try:
            a = world.node("a", NODE_A)
            b = world.node("b", NODE_B)
            began = time.monotonic()
            agents = {ext: await world.agent(ext, a, host=AGENT_HOST, media=ext in extensions[:2])
                      for ext in extensions}
            # two calls with tones, from a customer phone with media, to the two agents with media
            loud = await Phone.start(host=CUSTOMER, user="3105550000", name="customer-loud", media=True)
            quiet = await Phone.start(host=CUSTOMER, user="3105550001", name="customer")
            world.phones.update({"loud": loud, "quiet": quiet})
            await ready(world, a, extensions[:2])
            toned = [await loud.call(f"sip:{DID}@{NODE_A}:{a.port}", timeout=10) for _ in range(2)]
            await ready(world, a, extensions[2:])
            rest = [await quiet.call(f"sip:{DID}@{NODE_A}:{a.port}", wait_answer=False)
                    for _ in range(N_CALLS - 2)]
            await asyncio.gather(*(call.wait_answered(20) for call in rest))
            await until(lambda: world.rows("SELECT count(*) FROM dialogs") == [(2 * N_CALLS,)],
                        "every call's two dialogs written through", timeout=20)
            set_up = time.monotonic() - began
            agent_calls = {ext: phone.calls[0] for ext, phone in agents.items()}
            for call in toned:
                call.rtp.play_tone(CUSTOMER_HZ)
            for ext in extensions[:2]:
                agent_calls[ext].rtp.play_tone(AGENT_HZ)

            killed = time.monotonic()
            a.kill()
            await until(lambda: f"took operation {OP} over from a: {N_CALLS} calls adopted, 0 ended" in b.output(),
                        "node b adopting every call", timeout=4 * LEASE + 10)
            adopted_after = time.monotonic() - killed
            assert world.rows("SELECT node_id, count(*) FROM calls WHERE ended_at IS NULL GROUP BY node_id") == [
                ("b", N_CALLS)]
            assert not any(call.ended for call in [*toned, *rest, *agent_calls.values()])
            start = loud.now()
            await asyncio.sleep(1.0)
            for call in toned:
                assert call.rtp.heard(start, loud.now()).share(AGENT_HZ) >= 0.9
            for ext in extensions[:2]:
                phone = agents[ext]
                assert agent_calls[ext].rtp.heard(start, phone.now()).share(CUSTOMER_HZ) >= 0.9

            hung = time.monotonic()
            async with httpx.AsyncClient(base_url=b.http, timeout=10, trust_env=False) as client:
                for ext in extensions:
                    answer = await client.post(AGENTBOX, params={"api": "hang", "agent_id": ext},
                                               headers={"wolkvox-token": token, "wolkvox_server": OP})
                    assert answer.status_code == 200, answer.text
            for call, phone in [*((c, loud) for c in toned), *((c, quiet) for c in rest)]:
                ended = await phone.wait_for(CallEnded, call=call, timeout=10)
                assert (ended.reason, ended.by) == ("bye", "remote")
            for ext, call in agent_calls.items():
                ended = await agents[ext].wait_for(CallEnded, call=call, timeout=10)
                assert (ended.reason, ended.by) == ("bye", "remote")
            await until(lambda: world.rows("SELECT count(*) FROM cdrs") == [(N_CALLS,)], "every CDR", timeout=10)
            hung_after = time.monotonic() - hung
            assert world.rows("SELECT hangup_by, node_id, transfer_count, count(*) FROM cdrs "
                              "GROUP BY hangup_by, node_id, transfer_count") == [("agent", "b", 0, N_CALLS)]
            assert sorted(r[0] for r in world.rows("SELECT agents->>0 FROM cdrs")) == extensions
            assert world.rows("SELECT count(*) FROM calls WHERE ended_at IS NULL") == [(0,)]
            # every agent stayed logged in: its registration is b's now, and it is ready again on b
            assert world.rows("SELECT node_id, count(*) FROM registrations GROUP BY node_id") == [("b", N_CALLS)]
            await until(lambda: world.rows(
                "SELECT h.state, h.node_id, count(*) FROM agent_state_history h WHERE h.id IN (SELECT max(id) "
                "FROM agent_state_history GROUP BY extension) GROUP BY h.state, h.node_id") == [
                ("ready", "b", N_CALLS)], "every agent ready on node b")
            print(f"\n{N_CALLS} calls: set up in {set_up:.1f} s, all adopted {adopted_after:.1f} s after kill -9 "
                  f"(lease {LEASE} s), all hung up with CDRs in {hung_after:.1f} s")
        finally:
            await world.close()


@dataclass
class Load:
    """A steady load of customers calling through the proxy."""

    answered: int = 0
    refused: dict[int, int] = field(default_factory=dict)  # status -> attempts refused (retried)
    errors: list[str] = field(default_factory=list)  # what each refusal said, with when
    dropped: list[str] = field(default_factory=list)  # calls ended by anyone but their customer
    ended_by_customer: int = 0
    stop: bool = False


async def customer_loop(phone: Phone, proxy: tuple[str, int], load: Load, hold: float) -> None:
    while not load.stop:
        try:
            call = await phone.call(f"sip:{DID}@{proxy[0]}:{proxy[1]}", timeout=15)
        except CallError as exc:
            load.refused[exc.status] = load.refused.get(exc.status, 0) + 1
            load.errors.append(f"{time.strftime('%H:%M:%S')} {exc}")
            await asyncio.sleep(0.5)
            continue
        load.answered += 1
        await asyncio.sleep(hold)
        if call.ended:
            load.dropped.append(call.invite.call_id if call.invite is not None else "?")
            continue
        await call.hangup()
        load.ended_by_customer += 1


@pytest.mark.timeout(170)
async def test_a_rolling_restart_through_kamailio_under_a_steady_call_load_drops_no_call(
        postgres_url: str, tmp_path: Path) -> None:
    extensions = [str(3001 + i) for i in range(4)]
    doc = operation_doc(extensions, trunk_network=f"{PROXY}/32", concurrency_limit=8)
    with loaded_database(postgres_url, doc) as (url, [token]):
        world = World(url, token, tmp_path)
        proxy: Proxy | None = None
        load = Load()
        syncing: asyncio.Task[None] | None = None
        try:
            a = world.node("a", NODE_A)
            b = world.node("b", NODE_B)
            c = world.node("c", NODE_C)
            proxy = Proxy(PROXY, tmp_path)
            proxy.start()
            await proxy.synced(world.engine)

            syncing = proxy.keep_synced(world.engine)
            for ext in extensions:
                await world.agent(ext, proxy.address, host=AGENT_HOST)
            await ready(world, a, extensions)
            customers = [await Phone.start(host=CUSTOMER, user=f"310555{i:04d}", name=f"customer-{i}")
                         for i in range(3)]
            world.phones.update({f"customer-{i}": phone for i, phone in enumerate(customers)})
            workers = [asyncio.get_running_loop().create_task(customer_loop(phone, proxy.address, load, 3.0))
                       for phone in customers]
            await until(lambda: load.answered >= 3, "the load running", timeout=15)

            async def restart(node: Serve) -> Serve:
                await asyncio.to_thread(node.stop)  # (off the loop: the phones keep running meanwhile)
                assert node.proc.returncode == 0
                return await asyncio.to_thread(world.node, node.node, node.host)

            # node a: drained (the operation and its calls go to b), stopped, started again
            assert world.owner() == "a"
            up_at_drain = load.answered - load.ended_by_customer - len(load.dropped)
            await asyncio.to_thread(_admin, url, "drain", "a")
            await until(lambda: world.owner() == "b", "the drain moving the operation to b", timeout=15)
            await restart(a)
            await asyncio.sleep(3.0)  # calls go on through b
            # node b: the operation moved to c with its calls, then b restarted
            await asyncio.to_thread(_admin, url, "move", OP, "c")
            await until(lambda: world.owner() == "c", "the move to c", timeout=15)
            await restart(b)
            await asyncio.sleep(3.0)
            # node c: SIGTERM hands the operation over (to a, the first of the least loaded), then c starts again
            answered_before_c = load.answered
            await restart(c)
            assert world.owner() == "a"
            await until(lambda: load.answered >= answered_before_c + 3, "calls answered after the restarts",
                        timeout=20)
            load.stop = True
            await asyncio.wait_for(asyncio.gather(*workers), 25)

            assert up_at_drain >= 1  # calls were up while the operation moved
            assert load.dropped == []
            assert load.ended_by_customer == load.answered
            # the only refusals: the old owner's 503 (Retry-After) to new calls while the operation changes hands,
            # which Kamailio answers with a 503 of its own (it may not pass a node's 503 on, RFC 3261 §16.7 step 6;
            # relayed, tm made it a 500)
            assert set(load.refused) <= {503}, load.errors
            assert sum(load.refused.values()) <= 3 * 3 * 3, load.errors  # a few per customer per handover at most
            await until(lambda: world.rows("SELECT count(*) FROM cdrs") == [(load.answered,)], "every CDR",
                        timeout=10)
            assert world.rows("SELECT hangup_by, count(*) FROM cdrs GROUP BY hangup_by") == [
                ("customer", load.answered)]
            assert world.rows("SELECT count(*) FROM calls WHERE ended_at IS NULL") == [(0,)]
            moved = [line for node in (a, b, c) for line in node.output().splitlines()
                     if "handed operation 0042 over" in line]  # (each log holds its node's restarts too)
            assert len(moved) == 3
            # each handover carried calls that were up (three customers, each holding a call 3 s at a time)
            carried = [int(re.search(r"over: (\d+) calls left", line).group(1)) for line in moved]  # type: ignore[union-attr]
            assert min(carried) >= 1, moved
            print(f"\nrolling restart: {load.answered} calls answered, 0 dropped, refusals retried: {load.refused}; "
                  f"handovers: {moved}")
        finally:
            load.stop = True
            if syncing is not None:
                syncing.cancel()
            await world.close()
            if proxy is not None:
                proxy.stop()


def _admin(url: str, *args: str) -> None:
    import os
    import subprocess

    from cluster_nodes import CALLBRIDGE

    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_")}
    done = subprocess.run([*CALLBRIDGE, "admin", "--database-url", url, "cluster", *args, "--lease-seconds",
                           str(LEASE)], capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
