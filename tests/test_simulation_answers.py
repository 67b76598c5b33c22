"""The simulation reaches answers, clocks and limits (issue 19): odd-but-legal Inqom answers × crash points,
seeded per-process clock skews, and values at and past every storage limit, each run to the end
(``World.run``) and checked (``World.check`` plus ``tests.support.answers.extra_checks``: every row in a
named final state matching where its bytes are, one Inqom document per blob version, counted by
Checksum and SourceId, nothing stored past a limit).

Each (scenario, answer) pair of ``PAIRS`` runs once without a crash, then once per crash point named for
it, found in the clean run's crash points and armed through the Interceptor (``CrashPoint``):

* drop → archive: ``lost_after_process``, ``ok_no_id`` × {none, after the list lookup, after the archive
  commit}; ``ok_empty_array``, ``gateway_504_after_process`` × {none, after the lookup};
  ``ok_two_elements`` alone; ``checksum_null_in_list`` × after the upload POST (a lookup follows only
  then); ``checksum_null``, ``done_then_processing``, ``deleted_after_done`` × {none, after the commit,
  before the public URL}; the four ``Retry-After`` rows and ``redirect_public`` (× after the commit).
* expense bill → archive (its own endpoint and lookup: name, beneficiary, Checksum): the five upload
  answers, ``lost_after_process`` and ``ok_no_id`` also × after the lookup; ``checksum_null_in_list`` ×
  after the upload POST; ``deleted_after_done`` × after the commit.
* duplicate (two versions, same bytes; the upload answers on both POSTs): ``lost_after_process`` and
  ``ok_no_id`` × {none, after the lookup}, ``ok_empty_array``, ``deleted_after_done`` × after the commit.
* enFact push (pushed twice with one ``webhook-id``: a Standard Webhooks redelivery):
  ``lost_after_process`` and ``retry_after_huge`` without a crash, ``ok_empty_array`` × {none, after the
  lookup}.
* seeded (``SEEDS``): scenario by seed, answers drawn at Inqom calls (p = 0.3, at most 3), a crash at a
  drawn call for three seeds in four, each process with its own skew within ±5 min on the ledger's and
  the budget's clocks and a new process for half the invocations; the rate budget must never refuse a
  call because of another process's clock.
* limits: every ``LIMITS`` value in one world, then again with a crash after its first archive commit.

Left out, and why (the budget: ≤ 60 s on two cores, 0.6–0.9 s a run): crash points *before* each call
and the points an answer does not change (``test_simulation`` crashes every point of every scenario;
an answer changes only what follows its own call); a crash at the upload POST with an upload answer
(the crash pre-empts the answer: it is ``test_simulation``'s crash after the POST); the commit crash
for ``ok_empty_array``, ``gateway_504_after_process`` and ``ok_two_elements`` (after the lookup their
path is ``ok_no_id``'s and ``lost_after_process``'s); the other upload answers with the enFact push
(once the invoice is an inbox blob, its upload is the drop's); GET-document and download rows, and all
``Retry-After`` rows but one, with the expense bill and the enFact push (past the upload they take the
drop's poller and archive code); ``Retry-After`` with the duplicate (answered before Inqom sees the
POST: the plain duplicate); the routing, deletion, lost-event and reconcile scenarios (no new code on
their paths reads an Inqom answer); parallel poll workers in the matrix runs (``POLL_WORKERS=1``, so a
crash armed by index lands where the clean run had it; the interleavings are ``test_simulation``'s and
the seeded runs keep the default workers).
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from typing import Callable

import pytest

from tests.support.answers import (
    ANSWERS, COUNTS, LIMITS, UPLOADS, AnswerActor, ClockActor, CrashPoint, entity_bytes, extra_checks,
)
from tests.support.appsettings import ENFACT_COMPANY
from tests.support.scenarios import drop_expense_bill, drop_to_archive, duplicate_of_an_archived_original
from tests.support.simulation import World, pdf

Scenario = Callable[[World], None]


def enfact_push(world: World) -> None:
    invoice = world.enfact.add_invoice(ENFACT_COMPANY, number="F2026-0042")
    world.push(str(invoice["id"]), webhook_id="msg_once_and_again")
    world.push(str(invoice["id"]), webhook_id="msg_once_and_again")  # a redelivery (Standard Webhooks)


SCENARIOS: dict[str, Scenario] = {
    "drop": drop_to_archive, "expense": drop_expense_bill, "duplicate": duplicate_of_an_archived_original, "enfact": enfact_push,
}

UPLOAD_ANSWERS = [a.name for a in ANSWERS.values() if a.ops == UPLOADS]
GET_ANSWERS = ["checksum_null", "done_then_processing", "deleted_after_done"]
RETRY_ANSWERS = ["retry_after_0", "retry_after_huge", "retry_after_http_date", "retry_after_garbage"]
AFTER_UPLOAD = CrashPoint("upload", "after")
AFTER_LIST = CrashPoint("list", "after")
AFTER_COMMIT = CrashPoint("commit", "after")
BEFORE_PUBLIC_URL = CrashPoint("public-url", "before")


def _pairs() -> list[tuple[str, str, tuple[CrashPoint, ...]]]:
    """(scenario, answer, crash points): each runs once without a crash, then once per crash point."""
    both = (AFTER_LIST, AFTER_COMMIT)
    return [
        *[("drop", name, both) for name in ("lost_after_process", "ok_no_id")],
        ("drop", "ok_empty_array", (AFTER_LIST,)),
        ("drop", "gateway_504_after_process", (AFTER_LIST,)), ("drop", "ok_two_elements", ()),
        ("drop", "checksum_null_in_list", (AFTER_UPLOAD,)),
        *[("drop", name, (AFTER_COMMIT, BEFORE_PUBLIC_URL)) for name in GET_ANSWERS],
        *[("drop", name, ()) for name in RETRY_ANSWERS],
        ("drop", "redirect_public", (AFTER_COMMIT,)),
        *[("expense", name, (AFTER_LIST,) if name in ("lost_after_process", "ok_no_id") else ())
          for name in UPLOAD_ANSWERS],
        ("expense", "checksum_null_in_list", (AFTER_UPLOAD,)), ("expense", "deleted_after_done", (AFTER_COMMIT,)),
        ("duplicate", "lost_after_process", (AFTER_LIST,)), ("duplicate", "ok_no_id", (AFTER_LIST,)),
        ("duplicate", "ok_empty_array", ()), ("duplicate", "deleted_after_done", (AFTER_COMMIT,)),
        ("enfact", "lost_after_process", ()), ("enfact", "ok_empty_array", (AFTER_LIST,)),
        ("enfact", "retry_after_huge", ()),
    ]


PAIRS = _pairs()
SEEDS = list(range(6))
#: The longest wait a legal answer may ask for: Retry-After up to a day (``shared.http.MAX_RETRY_AFTER``).
LONG_WAIT_ROUNDS = {"rounds": 16, "minutes_per_round": 240}


def _count(key: str, amount: float = 1) -> None:
    COUNTS[key] = COUNTS.get(key, 0) + amount


def _run_and_check(world: World, rounds: dict | None = None) -> list[str]:
    world.run(**(rounds or {}))
    return world.check() + extra_checks(world)


def _answered_run(azurite, scenario: str, row, crash: tuple[int, str] | None = None, **overrides: str):
    """One world: the answer row under the Interceptor, the budget on simulated time, the scenario run out."""
    # One poll worker: two rows polled in parallel would not repeat the clean run's order of calls, and the
    # crash point armed by index would land elsewhere (the interleavings are test_simulation's).
    with AnswerActor([row]) as answers, World.create(azurite, POLL_WORKERS="1", **overrides) as world:
        answers.bind(world)
        ClockActor(world, bound=0)  # the budget follows simulated time: a Retry-After is waited out
        if crash is not None:
            world.interceptor.arm(*crash)
        SCENARIOS[scenario](world)
        problems = _run_and_check(world, LONG_WAIT_ROUNDS if row.name == "retry_after_huge" else None)
        return problems, list(world.interceptor.crashable), list(world.interceptor.crashed), answers.applied


@pytest.mark.parametrize("scenario, answer, points", PAIRS,
                         ids=[f"{s}-{a}" + "".join(f"+{p.mode}_{p.point}" for p in pts) for s, a, pts in PAIRS])
def test_answer_by_crash_point(azurite, scenario, answer, points):
    row = ANSWERS[answer]
    if scenario == "duplicate" and row.ops == UPLOADS:
        row = replace(row, times=2)  # on both uploads: the second one is Inqom's Duplicate
    violations: list[str] = []
    began = time.monotonic()
    problems, clean, crashed, applied = _answered_run(azurite, scenario, row)
    violations += [f"no crash: {p}" for p in problems]
    assert not crashed
    given = bool(applied)
    _count("answer × crash runs")
    for point in points:
        index = point.index_in(clean)
        if index is None:
            violations.append(f"{point.label}: not in the clean run's crash points (the answer never leads there)")
            continue
        problems, crashable, crashed, applied = _answered_run(azurite, scenario, row, (index, point.mode))
        given = given or bool(applied)
        if not crashed or crashed[0][0] != index or not point.matches(crashable[index]):
            problems.append(f"the run diverged from the clean one: crashed {crashed}")
        violations += [f"{point.label} (#{index} {clean[index].name}): {p}" for p in problems]
        _count("answer × crash runs")
    if not given:  # some rows are reached only after a crash (a lookup, a second GET after Done)
        violations.append(f"the answer {answer} was given in none of the runs: the pair does not reach it")
    _count("answer × crash seconds", time.monotonic() - began)
    assert violations == [], f"{scenario} × {answer}:\n" + "\n".join(violations)


@pytest.mark.parametrize("seed", SEEDS)
def test_seeded_answers_crashes_and_clock_skew(azurite, seed):
    """Per-process skew within ±5 min on the ledger's clock and the budget's; a new process for half the
    invocations; odd answers drawn at Inqom calls; a crash at a call drawn from the seed."""
    began = time.monotonic()
    rng = random.Random(seed)
    scenario = list(SCENARIOS)[seed % len(SCENARIOS)]
    crash = (rng.randrange(40), rng.choice(["before", "after"])) if seed % 4 else None
    with AnswerActor(seed=seed, probability=0.3, max_draws=3) as answers, World.create(azurite) as world:
        answers.bind(world)
        clocks = ClockActor(world, seed=seed, bound=300, new_process=0.5)
        if crash is not None:
            world.interceptor.arm(*crash)
        SCENARIOS[scenario](world)
        problems = _run_and_check(world, LONG_WAIT_ROUNDS)
        throttled_by_inqom = any(a.startswith("retry_after_") for a in answers.applied)
        if clocks.budget_throttles() and not throttled_by_inqom:
            problems.append(f"the rate budget refused {clocks.budget_throttles()} calls though Inqom never said "
                            f"wait: a process obeyed another's clock")
        crashed = list(world.interceptor.crashed)
    _count("seeded runs")
    _count("seeded seconds", time.monotonic() - began)
    assert problems == [], (f"seed {seed} ({scenario}, crash {crash} -> {crashed}, answers {answers.applied}, "
                            f"skews {[round(s) for s in clocks.skews]}):\n" + "\n".join(problems))


def _limits_run(azurite, crash: tuple[int, str] | None = None):
    # One poll worker, as in _answered_run: the crash run must repeat the clean run's order of calls.
    with World.create(azurite, POLL_WORKERS="1") as world:
        ClockActor(world, bound=0)
        if crash is not None:
            world.interceptor.arm(*crash)
        for limit in LIMITS.values():
            world.inqom.extraction_for_name[limit.file] = limit.extracted
            world.drop(f"11287/{limit.kind}/{limit.file}", pdf(limit.name), metadata=limit.metadata or None)
        problems = _run_and_check(world)
        with world.interceptor.quiet():
            rows = list(world.services().ledger.scan())
            states = {e.get("BlobPath"): (e.state, (e.get("LastError") or "")[:200]) for e in rows}
            widest = max(entity_bytes(e.partition, e.key, e.fields) for e in rows)
            COUNTS["largest ledger row bytes"] = max(COUNTS.get("largest ledger row bytes", 0), widest)
        if problems:
            problems.append(f"rows: {states}")
        return problems, list(world.interceptor.crashable), list(world.interceptor.crashed)


def test_values_at_and_past_every_storage_limit(azurite):
    """Every ``LIMITS`` document in one world; then again with a crash after the first archive commit."""
    began = time.monotonic()
    problems, clean, _ = _limits_run(azurite)
    violations = [f"no crash: {p}" for p in problems]
    index = AFTER_COMMIT.index_in(clean)
    assert index is not None, "no archive commit in the limits run"
    problems, crashable, crashed = _limits_run(azurite, (index, AFTER_COMMIT.mode))
    if not crashed or not AFTER_COMMIT.matches(crashable[index]):
        problems.append(f"the run diverged from the clean one: crashed {crashed}")
    violations += [f"{AFTER_COMMIT.label}: {p}" for p in problems]
    _count("limit values", len(LIMITS))
    _count("limit runs", 2)
    _count("limit seconds", time.monotonic() - began)
    assert violations == [], "limits:\n" + "\n".join(violations)


def test_zz_totals(capsys):
    """Printed under capture too; asserts that every combination that ran was counted."""
    runs = int(COUNTS.get("answer × crash runs", 0))
    seeded = int(COUNTS.get("seeded runs", 0))
    seconds = sum(v for k, v in COUNTS.items() if k.endswith("seconds"))
    combos = sum(1 + len(points) for _, _, points in PAIRS)
    line = (f"answers simulation: {runs} of {combos} answer × crash combinations ({len(ANSWERS)} answers, "
            f"{len(PAIRS)} scenario × answer pairs) in {COUNTS.get('answer × crash seconds', 0):.1f}s; "
            f"{seeded} seeded skew runs in {COUNTS.get('seeded seconds', 0):.1f}s; "
            f"{int(COUNTS.get('limit values', 0))} limit values in {COUNTS.get('limit seconds', 0):.1f}s "
            f"(largest ledger row {COUNTS.get('largest ledger row bytes', 0) / 1024:.0f} KiB of 1024); "
            f"{seconds:.1f}s in all")
    with capsys.disabled():
        print("\n" + line)
    assert runs <= combos and seeded <= len(SEEDS)
