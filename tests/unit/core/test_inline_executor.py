"""``auto``'s inline executor moves a model whose batches keep blocking the event loop to a
thread, so health checks and other models keep answering; ``inline`` asked for stays put."""

from __future__ import annotations

import asyncio
import logging
import threading

import numpy as np
import pytest

from modelport.core.executors import (
    SLOW_BATCH_S,
    SLOW_BATCHES,
    InlineExecutor,
    ThreadExecutor,
    choose_executor,
)
from modelport.core.signature import NamedArrays
from modelport.testing import FakeModel

BATCH = {"x": np.ones((2, 3), dtype=np.float32)}


class Clock:
    """Each batch takes the next of ``durations`` (two reads per batch: start, end)."""

    def __init__(self, durations: list[float]) -> None:
        self.now = 0.0
        self.durations = durations
        self.reads = 0

    def __call__(self) -> float:
        if self.reads % 2:  # the end of a batch
            self.now += self.durations[self.reads // 2]
        self.reads += 1
        return self.now


def _threads_seen() -> tuple[FakeModel, list[str]]:
    seen: list[str] = []

    def predict(inputs: NamedArrays) -> NamedArrays:
        seen.append(threading.current_thread().name)
        return {"y": inputs["x"] * 2}

    return FakeModel(predict), seen


SLOW, FAST = SLOW_BATCH_S * 1.5, SLOW_BATCH_S / 10


@pytest.mark.parametrize(
    ("durations", "moved_after"),
    [
        ([SLOW] * SLOW_BATCHES + [FAST], SLOW_BATCHES),
        ([SLOW, SLOW, FAST, SLOW, SLOW, FAST, FAST], None),  # never enough in a row
        ([FAST] * 6, None),
        ([FAST, SLOW, FAST] + [SLOW] * SLOW_BATCHES + [FAST], 3 + SLOW_BATCHES),
    ],
    ids=["slow", "intermittent", "fast", "slow-later"],
)
def test_only_batches_slow_in_a_row_move_the_model_off_the_loop(
    durations: list[float], moved_after: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    model, seen = _threads_seen()
    executor = InlineExecutor(model, move_when_slow=True, name="m", clock=Clock(durations))
    main = threading.current_thread().name

    async def batches() -> None:
        for _ in durations:
            out = await executor.run(BATCH)
            np.testing.assert_array_equal(out["y"], BATCH["x"] * 2)
        await executor.close()

    with caplog.at_level(logging.WARNING, "modelport.executors"):
        asyncio.run(batches())
    expected = len(durations) if moved_after is None else moved_after
    assert seen[:expected] == [main] * expected
    assert all(name != main and name.startswith("mp-m") for name in seen[expected:])
    assert (executor.moved is not None) is (moved_after is not None)
    assert ("run on a thread from now on" in caplog.text) is (moved_after is not None)


def test_slow_batches_that_raise_count_too() -> None:
    """A batch that raises after blocking the loop blocked it just as long: it counts
    toward the move, and the error still reaches the caller."""
    calls = 0
    seen: list[str] = []

    def predict(inputs: NamedArrays) -> NamedArrays:
        nonlocal calls
        calls += 1
        seen.append(threading.current_thread().name)
        if calls <= SLOW_BATCHES:
            raise ValueError("bad batch")
        return {"y": inputs["x"]}

    executor = InlineExecutor(
        FakeModel(predict), move_when_slow=True, name="m", clock=Clock([SLOW] * SLOW_BATCHES)
    )

    async def batches() -> None:
        for _ in range(SLOW_BATCHES):
            with pytest.raises(ValueError, match="bad batch"):
                await executor.run(BATCH)
        assert executor.moved is not None
        out = await executor.run(BATCH)  # on the thread now
        np.testing.assert_array_equal(out["y"], BATCH["x"])
        await executor.close()

    asyncio.run(batches())
    main = threading.current_thread().name
    assert seen[:SLOW_BATCHES] == [main] * SLOW_BATCHES
    assert seen[SLOW_BATCHES].startswith("mp-m")


def test_inline_asked_for_never_moves() -> None:
    model, seen = _threads_seen()
    executor = InlineExecutor(model, name="m", clock=Clock([SLOW] * 10))

    async def batches() -> None:
        for _ in range(10):
            await executor.run(BATCH)

    asyncio.run(batches())
    assert executor.moved is None
    assert set(seen) == {threading.current_thread().name}


def test_auto_picks_the_moving_inline_executor_and_inline_the_fixed_one() -> None:
    model = FakeModel()
    auto = choose_executor(model, "auto", 1, "m", cpu_share=1)
    fixed = choose_executor(model, "inline", 1, "m")
    assert isinstance(auto, InlineExecutor) and auto._watch
    assert isinstance(fixed, InlineExecutor) and not fixed._watch
    assert isinstance(choose_executor(model, "thread", 1, "m"), ThreadExecutor)


def test_once_moved_the_loop_answers_while_a_batch_computes() -> None:
    """What moving is for: a health check (here, any coroutine) runs during the batch."""
    started, finish = threading.Event(), threading.Event()

    def predict(inputs: NamedArrays) -> NamedArrays:
        started.set()
        assert finish.wait(10)
        return {"y": inputs["x"]}

    executor = InlineExecutor(
        FakeModel(predict), move_when_slow=True, name="m", clock=Clock([SLOW] * 10)
    )

    async def main() -> None:
        finish.set()
        for _ in range(SLOW_BATCHES):
            await executor.run(BATCH)
        finish.clear()
        started.clear()
        batch = asyncio.ensure_future(executor.run(BATCH))
        assert await asyncio.to_thread(started.wait, 10)
        assert not batch.done()  # the loop runs this line while predict still waits
        finish.set()
        await batch
        await executor.close()

    asyncio.run(main())
