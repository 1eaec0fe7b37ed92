"""Concurrent uploads share one decode budget: they cannot add up past one upload's limit."""

from __future__ import annotations

import threading
import time

import pytest

from microforge.api.decode_budget import DecodeBudget
from microforge.api.problems import ProblemError


def test_small_uploads_share_and_a_large_one_waits_for_room() -> None:
    budget = DecodeBudget(capacity=100, wait_seconds=5)
    order: list[str] = []
    with budget.reserve(40), budget.reserve(40):  # side by side: 80 of 100
        assert budget.in_use == 80

        def large() -> None:
            with budget.reserve(90):
                order.append("large")

        thread = threading.Thread(target=large)
        thread.start()
        time.sleep(0.2)
        assert order == [] and budget.in_use == 80, "90 more would not fit"
        order.append("released")
    thread.join(5)
    assert order == ["released", "large"] and budget.in_use == 0


def test_an_upload_alone_always_proceeds_and_a_long_wait_is_a_503() -> None:
    budget = DecodeBudget(capacity=100, wait_seconds=0.2)
    with budget.reserve(100):
        started = time.monotonic()
        with pytest.raises(ProblemError) as raised, budget.reserve(1):
            pass
        assert time.monotonic() - started < 2
    problem = raised.value
    assert problem.status == 503 and problem.code == "decoding_busy"
    assert int(problem.headers["Retry-After"]) > 0
    assert budget.in_use == 0
    with budget.reserve(100):  # free again: alone, the whole budget
        assert budget.in_use == 100
