"""The predict fast path at the ASGI level: disconnects, method checks, executor choice."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np

from modelport.api.app import create_app
from modelport.core.executors import InlineExecutor, ThreadExecutor, choose_executor
from modelport.core.signature import NamedArrays
from modelport.testing import FakeModel, build_test_services

BODY = b'{"inputs": [[1, 2, 3]]}'


def scope(path: str = "/v1/models/m/predict", method: str = "POST") -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
        ],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 40000),
    }


class Client:
    """One ASGI request whose client can 'disconnect' on demand."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.gone = asyncio.Event()
        self._sent_body = False
        self.on_disconnect: Any = None  # what the app registered via ON_DISCONNECT

    def register(self, callback: Any) -> None:
        self.on_disconnect = callback

    async def receive(self) -> dict[str, Any]:
        if not self._sent_body:
            self._sent_body = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int | None:
        starts = [m for m in self.messages if m["type"] == "http.response.start"]
        return starts[0]["status"] if starts else None


def _gated_app(release: threading.Event, tmp_path: Path) -> tuple[FakeModel, Any, Any]:
    """An app whose model (on a thread) holds every batch until ``release`` is set."""

    def gated(inputs: NamedArrays) -> NamedArrays:
        if inputs["x"].any():  # warm-up passes straight through
            release.wait(10)
        return {"y": inputs["x"]}

    model = FakeModel(gated)
    services = build_test_services(
        {"m": model}, settings={"executors": {"mode": "thread"}}, data_dir=tmp_path
    )
    return model, services, create_app(services)


def test_a_client_that_disconnects_while_queued_is_dropped_before_inference(tmp_path: Path) -> None:
    release = threading.Event()
    model, services, app = _gated_app(release, tmp_path)

    async def main() -> None:
        await services.registry.load_all()
        model.calls.clear()
        first, second = Client(), Client()
        a = asyncio.create_task(app(scope(), first.receive, first.send))
        await asyncio.sleep(0.05)  # `first` now holds the executor
        b = asyncio.create_task(app(scope(), second.receive, second.send))
        await asyncio.sleep(0.05)  # `second` is queued behind it
        second.gone.set()  # ...and its client goes away
        await asyncio.wait_for(b, 5)
        release.set()
        await asyncio.wait_for(a, 5)
        assert first.status == 200
        assert second.status is None  # nobody left to answer
        assert model.calls == [1]  # the dropped request never reached the model
        batcher = services.registry.resolve("m").batcher
        assert batcher is not None and batcher.stats.dropped_cancelled == 1
        await services.registry.close()

    asyncio.run(main())


def test_a_quick_request_starts_no_disconnect_watcher(tmp_path: Path, monkeypatch: Any) -> None:
    """The watch task costs as much as the rest of the request; only waiting requests pay."""
    from modelport.api import fastpath

    started: list[object] = []
    real = fastpath._disconnected

    async def counting(receive: Any) -> None:
        started.append(receive)
        await real(receive)

    monkeypatch.setattr(fastpath, "_disconnected", counting)
    monkeypatch.setattr(fastpath, "WATCH_AFTER_S", 0.5)  # ample for a loaded CI machine
    services = build_test_services({"m": FakeModel()}, data_dir=tmp_path)
    app = create_app(services)

    async def main() -> None:
        await services.registry.load_all()
        client = Client()
        await app(scope(), client.receive, client.send)
        assert client.status == 200
        await asyncio.sleep(2 * fastpath.WATCH_AFTER_S)  # a leaked timer would fire now
        assert started == []
        await services.registry.close()

    asyncio.run(main())


def test_non_post_on_a_predict_path_is_405(tmp_path: Path) -> None:
    app = create_app(build_test_services({"m": FakeModel()}, data_dir=tmp_path))
    client = Client()
    asyncio.run(app(scope(method="GET"), client.receive, client.send))
    assert client.status == 405
    headers = dict(client.messages[0]["headers"])
    assert headers[b"allow"] == b"POST"


def test_executor_choice() -> None:
    python_model = FakeModel()
    assert isinstance(choose_executor(python_model, "auto", 1, "m"), InlineExecutor)
    assert isinstance(choose_executor(python_model, "thread", 2, "m"), ThreadExecutor)
    python_model.releases_gil = True
    assert isinstance(choose_executor(python_model, "auto", 1, "m"), ThreadExecutor)
    assert isinstance(choose_executor(python_model, "auto", 1, "m", cpu_share=2), ThreadExecutor)
    # one core for this process: the loop could not run beside the model, so no thread
    assert isinstance(choose_executor(python_model, "auto", 1, "m", cpu_share=1), InlineExecutor)
    assert isinstance(choose_executor(python_model, "thread", 1, "m", cpu_share=1), ThreadExecutor)
    # but a pool asked for (threads > 1) is a pool
    assert isinstance(choose_executor(python_model, "auto", 2, "m", cpu_share=1), ThreadExecutor)
    assert isinstance(choose_executor(python_model, "inline", 1, "m"), InlineExecutor)

    async def main() -> None:
        ex = ThreadExecutor(FakeModel(), 2)
        out = await ex.run({"x": np.ones((2, 3), dtype=np.float32)})
        assert out["y"].tolist() == [[2, 2, 2]] * 2
        await ex.close()

    asyncio.run(main())


def test_with_the_disconnect_extension_no_watcher_runs_and_the_callback_drops_the_request(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Under modelport's protocol the server calls back on disconnect: no task waits in
    receive(), even for a request queued longer than WATCH_AFTER_S."""
    from modelport.api import fastpath
    from modelport.api.protocol import ON_DISCONNECT

    watchers = 0
    real = fastpath._disconnected

    async def counting(receive: Any) -> None:
        nonlocal watchers
        watchers += 1
        await real(receive)

    monkeypatch.setattr(fastpath, "_disconnected", counting)
    release = threading.Event()
    model, services, app = _gated_app(release, tmp_path)

    async def main() -> None:
        await services.registry.load_all()
        model.calls.clear()
        first, second = Client(), Client()
        scopes = []
        for client in (first, second):
            s = scope()
            s["extensions"] = {ON_DISCONNECT: client.register}
            scopes.append(s)
        a = asyncio.create_task(app(scopes[0], first.receive, first.send))
        await asyncio.sleep(0.05)
        b = asyncio.create_task(app(scopes[1], second.receive, second.send))
        await asyncio.sleep(fastpath.WATCH_AFTER_S * 3)  # queued past the watch delay
        assert second.on_disconnect is not None
        second.on_disconnect()  # the server saw the connection drop
        await asyncio.wait_for(b, 5)
        release.set()
        await asyncio.wait_for(a, 5)
        assert first.status == 200
        assert first.on_disconnect is None  # withdrawn once the prediction finished
        assert second.status is None
        assert model.calls == [1]
        assert watchers == 0
        await services.registry.close()

    asyncio.run(main())
