"""Exactly once, proven by simulation: a crash at every named point of every document path, and
seeded interleavings of two upload workers and a poll tick, each followed by recovery as Azure
would do it and a check of every invariant of ``../shared/guide/DESIGN.md``.

A failing run names its scenario, crash point (or seed) and the violations; rerun one seed with
``SIM_SEEDS=<seed> bash scripts/test.sh tests/test_simulation.py -k interleav``.
"""

from __future__ import annotations

import os
from typing import Callable

import pytest

from tests.support.appsettings import ENFACT_COMPANY
from tests.support.simulation import STATS, Scheduler, World, crash_points, pdf

Scenario = Callable[[World], None]


def drop_to_archive(world: World) -> None:
    world.drop("11287/supplier/facture-1.pdf", pdf("facture-1"))


def drop_expense_bill(world: World) -> None:
    world.drop("11287/expense/Jeanne Dupont/taxi.jpg", pdf("taxi"))


def routing_failure_to_quarantine(world: World) -> None:
    world.drop("11287/supplier/virus.exe", pdf("virus"))


def deleted_in_inqom(world: World) -> None:
    world.inqom.flow_for_name["gone.pdf"] = ("Received", "Deleted")
    world.drop("11287/other/gone.pdf", pdf("gone"))


def duplicate_of_an_archived_original(world: World) -> None:
    world.drop("11287/supplier/a.pdf", pdf("same"))
    world.drop("11287/supplier/a-copy.pdf", pdf("same"))


def transient_failures_then_watchdog(world: World) -> None:
    world.inqom.inject("500", times=3, path_contains="/Documents")  # 2 attempts per call: 1st delivery fails
    world.drop("11287/client/vente.pdf", pdf("vente"))


def lost_blob_event(world: World) -> None:
    world.drop("11287/other/no-event.pdf", pdf("no-event"), event=False)


def enfact_push_to_archive(world: World) -> None:
    invoice = world.enfact.add_invoice(ENFACT_COMPANY, number="F2026-0042")
    world.push(str(invoice["id"]))


def enfact_missed_push_reconciled(world: World) -> None:
    world.enfact.add_invoice(ENFACT_COMPANY, number="F2026-0043")
    world.reconcile_rounds.add(0)


SCENARIOS: dict[str, Scenario] = {
    "drop → archive": drop_to_archive,
    "expense bill → archive": drop_expense_bill,
    "routing failure → quarantine": routing_failure_to_quarantine,
    "deleted in Inqom → quarantine": deleted_in_inqom,
    "duplicate → linked and archived": duplicate_of_an_archived_original,
    "transient failures → host retry / watchdog": transient_failures_then_watchdog,
    "lost blob event → repair sweep": lost_blob_event,
    "enFact push → fetch → archive": enfact_push_to_archive,
    "enFact missed push → reconcile → archive": enfact_missed_push_reconciled,
}


def _clean_trace(azurite, scenario: Scenario) -> list[str]:
    with World.create(azurite) as world:
        scenario(world)
        world.run()
        problems = world.check()
        assert world.crashes == 0
        assert problems == [], problems
        return crash_points(world.interceptor.trace)


@pytest.mark.parametrize("title", list(SCENARIOS))
def test_every_crash_point_recovers_with_every_invariant_holding(azurite, title):
    scenario = SCENARIOS[title]
    points = _clean_trace(azurite, scenario)
    assert points, "the scenario made no storage write or API call"
    STATS.crash_points.setdefault(title, set()).update(points)
    violations: list[str] = []
    for index, point in enumerate(points):
        for mode in ("before", "after"):
            with World.create(azurite) as world:
                world.interceptor.arm(index, mode)
                scenario(world)
                world.run()
                STATS.crash_runs += 1
                reached = len(world.interceptor.crashable) > index and world.crashes == 1
                problems = world.check()
            if not reached:
                problems.append(f"the crash point was not reached (the run diverged from the clean trace)")
            violations += [f"crash {mode} #{index} [{point}]: {p}" for p in problems]
    assert violations == [], "\n".join(violations)


def _seeds() -> list[int]:
    chosen = os.environ.get("SIM_SEEDS")
    return [int(s) for s in chosen.split(",")] if chosen else list(range(24))


@pytest.mark.parametrize("seed", _seeds())
def test_interleaved_upload_workers_and_poll_tick(azurite, seed):
    """Two deliveries of one blob and a poll tick, their calls ordered by ``seed``; the clock jumps
    past the upload claim at a random moment (so the tick's watchdog can take it over), Inqom
    fails some uploads (so the error paths race too), and in half the schedules one actor dies
    at a random call."""
    with World.create(azurite, UPLOAD_CLAIM_SECONDS="900") as world:
        name = "11287/supplier/race.pdf"
        world.drop(name, pdf(f"race-{seed}"), event=False)
        failing_posts = (0, 0, 1, 2, 3)[seed % 5]  # HTTP_MAX_ATTEMPTS=2: 2 failures fail one upload call
        if failing_posts:
            world.inqom.inject("500", times=failing_posts, path_contains="/Documents")
        world.services().tokens.headers()  # warm the token: the token lock is not what is under test
        scheduler = Scheduler(seed, crash_probability=0.5 if seed % 2 else 0.0)
        world.interceptor.scheduler = scheduler

        def deliver() -> None:
            world.invoke("blob", lambda: world.host.deliver_blob("upload_document", name))

        steps = scheduler.run({"upload-1": deliver, "upload-2": deliver, "tick": world.tick},
                              [lambda: world.advance(seconds=960)])
        world.interceptor.scheduler = None
        world.run()
        STATS.schedules += 1
        problems = world.check()
        uploads = len(world.inqom.calls("POST", "/Documents"))
    assert problems == [], f"seed {seed}: " + "\n".join(problems) + "\nschedule:\n  " + "\n  ".join(steps)
    assert uploads >= 1
