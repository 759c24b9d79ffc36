from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np
import pytest

from modelport.clock import ManualClock
from modelport.core.batching import Batcher, BatchPolicy, Decision, decide, take_count
from modelport.core.signature import NamedArrays
from modelport.errors import DeadlineExceeded, ModelFailed, Overloaded, ValueOutOfRange

# ── the pure policy ───────────────────────────────────────────────────────────

P = BatchPolicy(max_batch_size=8)
P_WAIT = BatchPolicy(max_batch_size=8, max_delay_s=0.010, preferred_batch_size=4)
P_TWO = BatchPolicy(max_batch_size=8, concurrency=2)


@pytest.mark.parametrize(
    ("queued", "oldest", "busy", "policy", "expected"),
    [
        (0, 0.0, 0, P, Decision(run=False)),  # nothing to do
        (1, 0.0, 0, P, Decision(run=True)),  # a lone request runs at once
        (5, 0.0, 1, P, Decision(run=False)),  # executor busy: accumulate
        (5, 9.9, 1, P, Decision(run=False)),  # ...however long they waited
        (5, 0.0, 1, P_TWO, Decision(run=True)),  # a second slot is free
        (5, 0.0, 2, P_TWO, Decision(run=False)),
        (1, 0.0, 0, P_WAIT, Decision(run=False, wait_s=0.010)),  # below preferred: wait
        (1, 0.004, 0, P_WAIT, Decision(run=False, wait_s=0.006)),  # ...only up to max_delay
        (1, 0.010, 0, P_WAIT, Decision(run=True)),  # delay spent
        (4, 0.0, 0, P_WAIT, Decision(run=True)),  # preferred size reached
    ],
)
def test_decide(
    queued: int, oldest: float, busy: int, policy: BatchPolicy, expected: Decision
) -> None:
    got = decide(queued, oldest, busy, policy)
    assert got.run == expected.run
    assert got.wait_s == pytest.approx(expected.wait_s)


@pytest.mark.parametrize(
    ("rows", "limit", "expected"),
    [([1, 1, 1], 8, 3), ([4, 4, 1], 8, 2), ([20, 1], 8, 1), ([1, 20], 8, 1), ([], 8, 0)],
)
def test_take_count(rows: list[int], limit: int, expected: int) -> None:
    assert take_count(rows, limit) == expected


# ── the batcher, with a fake model and a manual clock ─────────────────────────


class GatedModel:
    """Records each batch; holds every call until ``gate`` is set (when one is given)."""

    def __init__(self, fn: Callable[[NamedArrays], NamedArrays] | None = None) -> None:
        self.batches: list[int] = []
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()
        self._fn = fn or (lambda b: {"y": b["x"] * 2})

    async def __call__(self, batch: NamedArrays) -> NamedArrays:
        self.batches.append(int(batch["x"].shape[0]))
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        return self._fn(batch)


def rows(n: int, start: float = 0) -> NamedArrays:
    return {"x": np.arange(start, start + n, dtype=np.float32).reshape(n, 1)}


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro_fn())  # type: ignore[arg-type]


def test_lone_request_is_not_delayed() -> None:
    async def main() -> None:
        clock = ManualClock()
        model = GatedModel()
        batcher = Batcher(model, BatchPolicy(), clock)
        out = await batcher.submit(rows(1, 3), 1)
        assert out["y"].tolist() == [[6.0]]
        assert model.batches == [1]
        assert batcher.stats.queue_wait_s_total == 0.0

    run(main)


def test_requests_already_read_in_the_same_loop_turn_share_a_batch() -> None:
    # The drain takes one more turn of the event loop before popping: a request whose
    # callback is already scheduled (its socket was readable) joins this batch.
    async def main() -> None:
        model = GatedModel()
        batcher = Batcher(model, BatchPolicy(), ManualClock())
        loop = asyncio.get_running_loop()
        first = batcher.enqueue(rows(1), 1)
        later: list[asyncio.Future[NamedArrays]] = []
        loop.call_soon(lambda: later.append(batcher.enqueue(rows(1, 5), 1)))
        await first
        await asyncio.gather(*later)
        assert model.batches == [2]

    run(main)


def test_two_slots_share_a_burst_without_a_failed_drain() -> None:
    # concurrency 2: two drains start in one turn; the first takes the whole queue, and
    # the second must find it empty and leave quietly (not fail on an empty deque)
    async def main() -> None:
        model = GatedModel()
        batcher = Batcher(model, BatchPolicy(concurrency=2), ManualClock())
        first = batcher.enqueue(rows(1), 1)
        second = batcher.enqueue(rows(1, 5), 1)
        drains = list(batcher._tasks)
        assert len(drains) == 2
        await asyncio.gather(first, second)
        await asyncio.gather(*drains, return_exceptions=True)
        assert [t.exception() for t in drains] == [None, None]
        assert model.batches == [2]

    run(main)


def test_batches_form_while_the_executor_is_busy() -> None:
    async def main() -> None:
        model = GatedModel()
        model.gate = asyncio.Event()
        batcher = Batcher(model, BatchPolicy(max_batch_size=64), ManualClock())
        first = asyncio.create_task(batcher.submit(rows(1), 1))
        await model.started.wait()
        rest = [asyncio.create_task(batcher.submit(rows(2, 10 * i), 2)) for i in range(10)]
        await asyncio.sleep(0)
        model.gate.set()
        await first
        results = await asyncio.gather(*rest)
        assert model.batches == [1, 20]  # one lone call, then everything queued at once
        for i, out in enumerate(results):  # each caller gets exactly its own rows back
            assert out["y"].ravel().tolist() == [20.0 * i, 20.0 * i + 2]
        stats = batcher.stats.to_dict()
        assert stats["batches"] == 2 and stats["max_batch_rows"] == 20
        assert stats["mean_batch_rows"] == pytest.approx(10.5)

    run(main)


def test_max_batch_size_splits_the_queue() -> None:
    async def main() -> None:
        model = GatedModel()
        model.gate = asyncio.Event()
        batcher = Batcher(model, BatchPolicy(max_batch_size=4), ManualClock())
        first = asyncio.create_task(batcher.submit(rows(1), 1))
        await model.started.wait()
        rest = [asyncio.create_task(batcher.submit(rows(1), 1)) for _ in range(10)]
        await asyncio.sleep(0)
        model.gate.set()
        await asyncio.gather(first, *rest)
        assert model.batches == [1, 4, 4, 2]

    run(main)


def test_deadline_passed_in_queue_is_dropped_before_inference() -> None:
    async def main() -> None:
        clock = ManualClock()
        model = GatedModel()
        model.gate = asyncio.Event()
        batcher = Batcher(model, BatchPolicy(), clock)
        first = asyncio.create_task(batcher.submit(rows(1), 1))
        await model.started.wait()
        late = asyncio.create_task(batcher.submit(rows(1), 1, deadline=clock.now() + 1))
        on_time = asyncio.create_task(batcher.submit(rows(1), 1, deadline=clock.now() + 60))
        await asyncio.sleep(0)
        clock.advance(5)
        model.gate.set()
        await first
        with pytest.raises(DeadlineExceeded):
            await late
        await on_time
        assert model.batches == [1, 1]
        assert batcher.stats.dropped_deadline == 1

    run(main)


def test_disconnected_caller_is_dropped_before_inference() -> None:
    async def main() -> None:
        model = GatedModel()
        model.gate = asyncio.Event()
        batcher = Batcher(model, BatchPolicy(), ManualClock())
        first = asyncio.create_task(batcher.submit(rows(1), 1))
        await model.started.wait()
        gone = asyncio.create_task(batcher.submit(rows(1), 1))
        stays = asyncio.create_task(batcher.submit(rows(1), 1))
        await asyncio.sleep(0)
        gone.cancel()  # what the HTTP layer does when the client disconnects
        await asyncio.sleep(0)
        model.gate.set()
        await asyncio.gather(first, stays)
        assert model.batches == [1, 1]
        assert batcher.stats.dropped_cancelled == 1

    run(main)


def test_a_failing_batch_fails_every_caller_with_the_same_error() -> None:
    def boom(batch: NamedArrays) -> NamedArrays:
        raise ValueError("secret internals")

    async def main() -> None:
        model = GatedModel(boom)
        model.gate = asyncio.Event()
        batcher = Batcher(model, BatchPolicy(), ManualClock())
        first = asyncio.create_task(batcher.submit(rows(1), 1))
        await model.started.wait()
        rest = [asyncio.create_task(batcher.submit(rows(1), 1)) for _ in range(3)]
        await asyncio.sleep(0)
        model.gate.set()
        results = await asyncio.gather(first, *rest, return_exceptions=True)
        assert all(isinstance(r, ModelFailed) for r in results)
        assert len({str(r) for r in results[1:]}) == 1
        assert "secret" not in str(results[0])
        assert batcher.stats.failed_batches == 2
        # and the batcher keeps working afterwards
        model._fn = lambda b: {"y": b["x"]}
        assert (await batcher.submit(rows(1, 7), 1))["y"].tolist() == [[7.0]]

    run(main)


# ── a batch refused for some requests' data ──────────────────────────────────


def refuses_negative(batch: NamedArrays) -> NamedArrays:
    """A model that refuses a batch holding any negative row, as scikit-learn refuses an
    overflowing one: the data's fault (a 422), not the model's; it does not say which."""
    if (batch["x"] < 0).any():
        raise ValueOutOfRange("negative")
    return {"y": batch["x"] * 2}


def names_negative_rows(batch: NamedArrays) -> NamedArrays:
    """As the numpy plan does: the refusal names the rows it refused."""
    negative = np.flatnonzero((batch["x"] < 0).any(axis=1))
    if negative.size:
        raise ValueOutOfRange("negative", rows=tuple(negative.tolist()))
    return {"y": batch["x"] * 2}


Outcome = NamedArrays | BaseException


def batch_behind_a_first_request(
    fn: Callable[[NamedArrays], NamedArrays],
    requests: list[list[float]],
    on_queued: Callable[[list[asyncio.Task[NamedArrays]]], None] = lambda tasks: None,
    clock: ManualClock | None = None,
    timeouts: list[float | None] | None = None,
) -> tuple[GatedModel, Batcher, list[Outcome]]:
    """One request (x = 9) runs while ``requests`` (one row per value) queue behind it and
    form one batch; returns what each of them got. ``on_queued`` sees their tasks;
    ``timeouts`` gives each request a deadline that many seconds after it is queued."""
    model = GatedModel(fn)
    model.gate = asyncio.Event()
    clock = clock or ManualClock()
    batcher = Batcher(model, BatchPolicy(), clock)
    results: list[Outcome] = []
    after = timeouts or [None] * len(requests)

    async def main() -> None:
        first = asyncio.create_task(batcher.submit(rows(1, 9), 1))
        await model.started.wait()
        queued = [
            asyncio.create_task(
                batcher.submit(
                    {"x": np.array([[v] for v in values], np.float32)},
                    len(values),
                    deadline=None if timeout is None else clock.now() + timeout,
                )
            )
            for values, timeout in zip(requests, after, strict=True)
        ]
        on_queued(queued)
        await asyncio.sleep(0)
        model.gate.set()
        await first
        # a bounded wait: a caller left without an answer fails the test, not hangs it
        results.extend(await asyncio.wait_for(asyncio.gather(*queued, return_exceptions=True), 10))

    run(main)
    return model, batcher, results


def answered(result: Outcome, values: list[float]) -> bool:
    return not isinstance(result, BaseException) and result["y"][:, 0].tolist() == [
        2.0 * v for v in values
    ]


def test_a_batch_refused_for_one_request_s_data_fails_only_that_request() -> None:
    requests = [[v, v] for v in (1, 2, -3, 4, 5, 6, 7, 8)]  # two rows each; the third refused
    model, batcher, results = batch_behind_a_first_request(refuses_negative, requests)
    for values, result in zip(requests, results, strict=True):
        assert isinstance(result, ValueOutOfRange) if values[0] < 0 else answered(result, values)
    # 8 requests (16 rows) refused; its first half [1, 2, -3, 4] refused, so [1, 2] runs,
    # then [-3, 4] is refused, so [-3] (refused alone) and [4]; then [5, 6, 7, 8]
    assert model.batches == [1, 16, 8, 4, 4, 2, 2, 8]
    stats = batcher.stats  # counted once per batch formed, not per re-run
    assert (stats.batches, stats.requests, stats.rows) == (2, 9, 17)
    assert (stats.split_batches, stats.failed_batches) == (1, 0)


def test_a_refusal_that_names_its_rows_costs_one_more_call_not_a_split() -> None:
    requests = [[1, 2], [3, -4], [5], [-6, -7], [8]]
    model, batcher, results = batch_behind_a_first_request(names_negative_rows, requests)
    assert isinstance(results[1], ValueOutOfRange) and isinstance(results[3], ValueOutOfRange)
    assert all(answered(results[i], requests[i]) for i in (0, 2, 4))
    assert model.batches == [1, 8, 4]  # the batch, then the other three requests once
    assert (batcher.stats.split_batches, batcher.stats.failed_batches) == (1, 0)


@pytest.mark.parametrize(
    "named",
    [
        np.array([2]),  # numpy's own integers: read as rows (request [-2])
        [np.int64(2)],
    ],
)
def test_rows_named_as_numpy_integers_are_read(named: object) -> None:
    def fn(batch: NamedArrays) -> NamedArrays:
        if (batch["x"] < 0).any():
            raise ValueOutOfRange("negative", rows=named)  # type: ignore[arg-type]
        return {"y": batch["x"] * 2}

    model, _, results = batch_behind_a_first_request(fn, [[1, 2], [-3], [4]])
    assert isinstance(results[1], ValueOutOfRange)
    assert answered(results[0], [1, 2]) and answered(results[2], [4])
    assert model.batches == [1, 4, 3]


@pytest.mark.parametrize(
    "named",
    [(-1,), (99,), (0, 99), (0.5,), ("1",), 7, [[1]], object()],
)
def test_named_rows_that_cannot_be_read_or_trusted_are_ignored(named: object) -> None:
    """Rows out of the batch, not whole numbers, or not a collection: the batch is halved
    as if none were named, and every caller still gets an answer."""

    def fn(batch: NamedArrays) -> NamedArrays:
        if (batch["x"] < 0).any():
            raise ValueOutOfRange("negative", rows=named)  # type: ignore[arg-type]
        return {"y": batch["x"] * 2}

    model, _, results = batch_behind_a_first_request(fn, [[1], [-2], [3], [4]])
    assert [isinstance(r, ValueOutOfRange) for r in results] == [False, True, False, False]
    assert model.batches == [1, 4, 2, 1, 1, 2]  # halved


def test_every_request_named_fails_at_once() -> None:
    model, batcher, results = batch_behind_a_first_request(names_negative_rows, [[-1], [2, -3]])
    assert all(isinstance(r, ValueOutOfRange) for r in results)
    assert model.batches == [1, 3]
    assert (batcher.stats.split_batches, batcher.stats.failed_batches) == (0, 1)


def test_a_model_failure_in_a_split_half_fails_that_half_only() -> None:
    calls: list[list[float]] = []

    def fn(batch: NamedArrays) -> NamedArrays:
        calls.append(batch["x"][:, 0].tolist())
        if calls[-1] == [1.0, 2.0]:  # the first half's re-run: the model itself fails
            raise RuntimeError("broken")
        return refuses_negative(batch)

    _, batcher, results = batch_behind_a_first_request(fn, [[1], [2], [-3], [4]])
    # a failure that is not the data's is not split further: both of [1, 2] get it
    assert isinstance(results[0], ModelFailed) and isinstance(results[1], ModelFailed)
    assert isinstance(results[2], ValueOutOfRange) and answered(results[3], [4])
    assert calls == [[9], [1, 2, -3, 4], [1, 2], [-3, 4], [-3], [4]]
    # split, and failed for the model's own reason in a part: both show
    assert (batcher.stats.split_batches, batcher.stats.failed_batches) == (1, 1)


def test_a_caller_gone_during_a_split_is_not_run_again() -> None:
    queued: list[asyncio.Task[NamedArrays]] = []

    def fn(batch: NamedArrays) -> NamedArrays:
        if batch["x"][:, 0].tolist() == [-1, 2]:  # the first half's re-run:
            queued[3].cancel()  # meanwhile 4's client leaves (as the HTTP layer does)
        return refuses_negative(batch)

    model, batcher, results = batch_behind_a_first_request(
        fn, [[-1], [2], [3], [4]], on_queued=queued.extend
    )
    assert isinstance(results[0], ValueOutOfRange)
    assert answered(results[1], [2]) and answered(results[2], [3])
    assert isinstance(results[3], asyncio.CancelledError)
    assert model.batches == [1, 4, 2, 1, 1, 1]  # [3] ran alone, without the departed 4
    assert batcher.stats.dropped_cancelled == 0  # it left after inference, not before


def test_a_deadline_passed_during_a_split_is_a_504_not_another_run() -> None:
    clock = ManualClock()
    seen: list[list[float]] = []

    def fn(batch: NamedArrays) -> NamedArrays:
        seen.append(batch["x"][:, 0].tolist())
        if seen[-1] == [-1, 2]:
            clock.advance(5)  # the first half's re-run takes long: 3's deadline passes
        return refuses_negative(batch)

    _, batcher, results = batch_behind_a_first_request(
        fn, [[-1], [2], [3], [4]], clock=clock, timeouts=[60, 60, 1, 60]
    )
    assert isinstance(results[0], ValueOutOfRange) and answered(results[1], [2])
    assert isinstance(results[2], DeadlineExceeded) and answered(results[3], [4])
    assert seen == [[9], [-1, 2, 3, 4], [-1, 2], [-1], [2], [4]]  # 3 did not run again
    assert batcher.stats.dropped_deadline == 1


def test_cancelled_during_a_split_every_caller_still_gets_an_answer() -> None:
    """Shutdown cancels a drain while it re-runs the first half: the half not yet run
    must not be left waiting."""

    def fn(batch: NamedArrays) -> NamedArrays:
        if batch["x"][:, 0].tolist() == [1, 2]:
            raise asyncio.CancelledError
        return refuses_negative(batch)

    _, batcher, results = batch_behind_a_first_request(fn, [[1], [2], [-3], [4]])
    assert all(isinstance(r, Overloaded) for r in results), results
    # the split that began is counted; a shutdown is not a model failure
    assert (batcher.stats.split_batches, batcher.stats.failed_batches) == (1, 0)


def test_a_fault_in_the_batcher_itself_answers_every_caller_and_it_keeps_working(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from modelport.core import batching

    def broken(batch: object, rows: object) -> list[object]:
        raise RuntimeError("a bug in the split")

    monkeypatch.setattr(batching, "_refused", broken)
    _, batcher, results = batch_behind_a_first_request(refuses_negative, [[1], [-2]])
    assert all(isinstance(r, ModelFailed) for r in results), results
    assert batcher.stats.failed_batches == 1

    async def after() -> None:
        assert (await batcher.submit(rows(1, 3), 1))["y"].tolist() == [[6.0]]

    run(after)


def test_output_row_count_mismatch_is_detected() -> None:
    async def main() -> None:
        model = GatedModel(lambda b: {"y": b["x"][:1]})
        batcher = Batcher(model, BatchPolicy(), ManualClock())
        with pytest.raises(ModelFailed, match="returned 1 rows in output 'y' for 3 input rows"):
            await batcher.submit(rows(3), 3)

    run(main)


def test_full_queue_is_refused_with_retry_after() -> None:
    async def main() -> None:
        model = GatedModel()
        model.gate = asyncio.Event()
        batcher = Batcher(model, BatchPolicy(max_queue=2), ManualClock())
        first = asyncio.create_task(batcher.submit(rows(1), 1))
        await model.started.wait()
        queued = [asyncio.create_task(batcher.submit(rows(1), 1)) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as info:
            await batcher.submit(rows(1), 1)
        assert info.value.retry_after > 0
        model.gate.set()
        await asyncio.gather(first, *queued)

    run(main)


def test_preferred_size_waits_at_most_max_delay() -> None:
    async def main() -> None:
        from modelport.clock import MonotonicClock

        model = GatedModel()
        policy = BatchPolicy(max_delay_s=0.05, preferred_batch_size=3)
        batcher = Batcher(model, policy, MonotonicClock())
        a = asyncio.create_task(batcher.submit(rows(1), 1))
        await asyncio.sleep(0.005)
        b = asyncio.create_task(batcher.submit(rows(1), 1))
        await asyncio.gather(a, b)  # never reaches 3: runs once the delay is spent
        assert model.batches == [2]

    run(main)


def test_close_lets_queued_work_finish_then_refuses_new_work() -> None:
    async def main() -> None:
        model = GatedModel()
        model.gate = asyncio.Event()
        batcher = Batcher(model, BatchPolicy(), ManualClock())
        pending = [asyncio.create_task(batcher.submit(rows(1), 1)) for _ in range(3)]
        await model.started.wait()
        closing = asyncio.create_task(batcher.close())
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await batcher.submit(rows(1), 1)
        model.gate.set()
        await closing
        assert all(p.done() and not p.exception() for p in pending)

    run(main)
