"""The real `modelport serve` process over a socket: the README's quick start, end to end."""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import process_ended, write_mlp_onnx

pytestmark = pytest.mark.e2e

RECORD = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def test_demo_serve_answers_the_readme_curl(start_server: Any, tmp_path: Path) -> None:
    server = start_server("--data-dir", str(tmp_path / "data"))
    r = httpx.post(f"{server.url}/v1/models/iris/predict", json={"instances": [RECORD]})
    assert r.status_code == 200
    out = r.json()["outputs"][0]
    assert out["label"] == "setosa"
    assert sum(out["probabilities"].values()) == pytest.approx(1.0)
    assert r.headers["x-model-version"] == "1"
    assert {m["name"] for m in httpx.get(f"{server.url}/v1/models").json()["models"]} == {
        "iris",
        "diabetes",
        "digits",
    }
    # bad input over a real socket: precise 4xx, server still healthy
    bad = httpx.post(
        f"{server.url}/v1/models/iris/predict",
        content=b'{"inputs": [[1,2',
        headers={"content-type": "application/json"},
    )
    assert bad.status_code == 400
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    # graceful shutdown on SIGTERM, status 0 (one process or several workers alike)
    assert server.stop() == 0
    output = server.output()
    assert "Application shutdown complete" in output
    assert "Traceback" not in output


@pytest.mark.parametrize("port", ["free", "0"])
def test_one_process_stops_gracefully_on_sigterm_with_status_0(tmp_path: Path, port: str) -> None:
    """uvicorn re-raises the SIGTERM it handled once it has shut down; the process must not
    die of it (status 143) but exit 0, as the multi-worker supervisor does. Both ways one
    process serves: on a port given, and on a socket bound first for --port 0."""
    import re
    import time

    from tests.conftest import ServerProcess

    args = ["--workers", "1", "--data-dir", str(tmp_path / "data")]
    server = ServerProcess([*args, "--port", "0"] if port == "0" else args, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while "Application startup complete" not in server.output():
            assert server.proc.poll() is None and time.monotonic() < deadline, server.output()
            time.sleep(0.05)
        found = re.search(r"serving .* on (http://\S+?)  ", server.output())
        assert found is not None, server.output()
        assert httpx.get(f"{found.group(1)}/healthz", timeout=5).status_code == 200
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 0, server.output()
        assert "Application shutdown complete" in server.output()
    finally:
        server.stop()


def test_serve_model_files_and_a_repository(start_server: Any, tmp_path: Path) -> None:
    import joblib
    import numpy as np
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    clf = LogisticRegression(max_iter=500).fit(data.data.astype(np.float32), data.target)
    onnx_path = tmp_path / "flowers.onnx"
    onnx_path.write_bytes(
        to_onnx(
            clf, data.data[:1].astype(np.float32), options={"zipmap": False}
        ).SerializeToString()
    )
    repo = tmp_path / "repo" / "iris2"
    (repo / "1").mkdir(parents=True)
    (repo / "2").mkdir()
    joblib.dump(clf, repo / "1" / "model.joblib")
    joblib.dump(
        LogisticRegression(max_iter=500).fit(data.data[:, :2], data.target),
        repo / "2" / "model.joblib",
    )
    (repo / "model.yaml").write_text(
        "labels: [setosa, versicolor, virginica]\naliases: {production: '1'}\n"
        "default_version: production\n"
    )
    server = start_server(
        str(onnx_path), "--repository", str(tmp_path / "repo"), "--data-dir", str(tmp_path / "data")
    )
    r = httpx.post(
        f"{server.url}/v1/models/flowers/predict", json={"inputs": [[5.1, 3.5, 1.4, 0.2]]}
    )
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["label"] == "0"
    r = httpx.post(f"{server.url}/v1/models/iris2/predict", json={"inputs": [[5.1, 3.5, 1.4, 0.2]]})
    assert r.json()["version"] == "1" and r.json()["outputs"][0]["label"] == "setosa"
    r = httpx.post(
        f"{server.url}/v1/models/iris2/versions/2/predict", json={"inputs": [[5.1, 3.5]]}
    )
    assert r.json()["version"] == "2" and r.headers["x-model-version"] == "2"
    r = httpx.post(
        f"{server.url}/v1/models/iris2/versions/production/predict", json={"inputs": [[5.1, 3.5]]}
    )
    assert r.status_code == 422  # production = v1, which takes 4 features
    server.stop()
    assert "pickles execute code" in server.output()


def test_bench_command_against_a_running_server(start_server: Any, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    server = start_server("--data-dir", str(tmp_path / "data"))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelport",
            "bench",
            "iris",
            "--url",
            server.url,
            "-c",
            "1,8",
            "-d",
            "1",
            "--warmup",
            "0.2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    rows = json.loads(out)
    assert [r["connections"] for r in rows] == [1, 8]
    for row in rows:
        assert row["requests"] > 0 and row["errors"] == 0 and row["non_2xx"] == 0
        assert row["p99_ms"] >= row["p50_ms"] > 0


def test_workers_share_the_port(start_server: Any, tmp_path: Path) -> None:
    import time

    server = start_server("--data-dir", str(tmp_path / "data"), "--workers", "2")
    deadline = time.monotonic() + 60  # /readyz answered by one; wait for both to listen
    while server.output().count("Application startup complete") < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ids = set()
    for _ in range(20):
        r = httpx.post(f"{server.url}/v1/models/iris/predict", json={"instances": [RECORD]})
        assert r.status_code == 200 and r.json()["outputs"][0]["label"] == "setosa"
        ids.add(r.headers["x-request-id"].split("-")[0])
    assert len(ids) == 2  # SO_REUSEPORT: 20 new connections did not all land on one worker
    assert server.stop() == 0
    assert server.output().count("Application startup complete") == 2


def test_workers_lend_idle_cores_to_a_lone_row_with_the_same_answers(
    start_server: Any, tmp_path: Path
) -> None:
    """Two workers: an ONNX model gets a lone-row session in each. Rows sent one at a time
    run on it (the other worker is quiet), rows sent together on each worker's own
    session; every answer equals onnxruntime's own, to the bit."""
    import os
    import re
    import time
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import onnxruntime as ort

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("there is no idle core to lend on one core")
    path = write_mlp_onnx(tmp_path / "mlp.onnx")
    server = start_server(
        str(path), "--data-dir", str(tmp_path / "data"), "--workers", "2", "--log-level", "info"
    )
    deadline = time.monotonic() + 60
    while server.output().count("Application startup complete") < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert len(re.findall(r"one-row batches may run on \d+ threads", server.output())) == 2
    rows = np.random.default_rng(3).standard_normal((40, 64)).astype(np.float32)
    expected = ort.InferenceSession(str(path)).run(None, {"x": rows})[0]
    url = f"{server.url}/v1/models/mlp/predict"

    def ask(batch: np.ndarray) -> np.ndarray:
        r = httpx.post(url, json={"inputs": batch.tolist()})
        assert r.status_code == 200, r.text
        return np.asarray([o["y"] for o in r.json()["outputs"]], dtype=np.float32)

    def stats_once(requests: int) -> dict[str, Any]:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # siblings publish their counters once a second
            r = httpx.get(f"{server.url}/v1/models/mlp")
            stats: dict[str, Any] = r.json()["versions"][0]["batching"]["stats"]
            if stats["requests"] == requests:
                return stats
            time.sleep(0.05)
        raise AssertionError(f"the workers never reported {requests} requests: {stats}")

    with httpx.Client() as client:  # one connection: one worker, the other one quiet
        for i in range(20):
            r = client.post(url, json={"inputs": rows[i : i + 1].tolist()})
            got = np.asarray(r.json()["outputs"][0]["y"], dtype=np.float32)
            np.testing.assert_array_equal(got, expected[i])
    assert stats_once(20)["lone_row_batches"] == 20  # each borrowed the quiet worker's core
    np.testing.assert_array_equal(ask(rows[:5]), expected[:5])  # a batch: never lent
    with ThreadPoolExecutor(8) as pool:  # many at once on new connections: both workers
        answers = list(pool.map(lambda i: ask(rows[i : i + 1]), range(20, 40)))
    np.testing.assert_array_equal(np.concatenate(answers), expected[20:40])
    stats = stats_once(41)
    assert stats["workers"] == 2
    # while both serve, rows mostly run on each worker's own share; the first rows of the
    # burst may still find the other worker quiet, so only "not all of them" is certain
    assert 20 <= stats["lone_row_batches"] < 40
    assert server.stop() == 0


def test_workers_report_batch_statistics_together(start_server: Any, tmp_path: Path) -> None:
    """Each worker counts its own batches; whichever answers GET /v1/models/NAME adds its
    siblings' published counters, so the figures do not depend on the connection."""
    import time

    server = start_server("--data-dir", str(tmp_path / "data"), "--workers", "2")
    # this server's own directory (other test runs on the machine may have theirs)
    boards = f"modelport-stats-{server.proc.pid}-*"
    deadline = time.monotonic() + 60
    while server.output().count("Application startup complete") < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    workers = set()
    for _ in range(40):  # a new connection each: both workers get some
        r = httpx.post(f"{server.url}/v1/models/iris/predict", json={"instances": [RECORD]})
        assert r.status_code == 200
        workers.add(r.headers["x-request-id"].split("-")[0])
    assert len(workers) == 2
    reports: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 20
    while len(reports) < 2 and time.monotonic() < deadline:
        r = httpx.get(f"{server.url}/v1/models/iris")
        stats = r.json()["versions"][0]["batching"]["stats"]
        if stats["requests"] == 40:  # siblings publish once a second
            reports[r.headers["x-request-id"].split("-")[0]] = stats
        time.sleep(0.05)
    assert set(reports) == workers  # each worker, answering, counts all 40
    assert list(Path("/dev/shm").glob(boards))  # the shared directory
    for stats in reports.values():
        assert stats["workers"] == 2 and stats["rows"] == 40
        assert stats["max_batch_rows"] >= 1 and stats["batches"] <= 40
    assert server.stop() == 0
    assert not list(Path("/dev/shm").glob(boards))  # removed at exit


def _children(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(p) for p in text.split()}


def _workers(supervisor: int) -> set[int]:
    """The supervisor's worker processes (multiprocessing's spawn children)."""
    return {p for p in _children(supervisor) if "spawn" in Path(f"/proc/{p}/cmdline").read_text()}


def test_a_dead_worker_is_replaced_and_stop_is_clean(start_server: Any, tmp_path: Path) -> None:
    import os
    import signal
    import time

    server = start_server("--data-dir", str(tmp_path / "data"), "--workers", "2")
    workers = _workers(server.proc.pid)
    assert len(workers) == 2
    deadline = time.monotonic() + 60  # /readyz answered by one; wait for both to be up
    while server.output().count("Application startup complete") < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    victim = sorted(workers)[0]
    os.kill(victim, signal.SIGKILL)
    # Connections already queued on the victim's own socket die with it (the cost of a
    # socket per worker); wait until it is gone before counting on the survivor.
    while "State:\tZ" not in (
        Path(f"/proc/{victim}/status").read_text()
        if Path(f"/proc/{victim}").exists()
        else "State:\tZ"
    ):
        time.sleep(0.01)
    deadline = time.monotonic() + 60
    answered = resets = 0
    while time.monotonic() < deadline:  # the survivor answers meanwhile; then a new one joins
        try:
            r = httpx.post(f"{server.url}/v1/models/iris/predict", json={"instances": [RECORD]})
        except httpx.TransportError:
            resets += 1  # tolerated once: a connection queued on the victim as it died
            continue
        assert r.status_code == 200
        answered += 1
        if server.output().count("Application startup complete") >= 3 and answered >= 5:
            break
        time.sleep(0.1)
    assert server.output().count("Application startup complete") >= 3
    assert resets <= 1 and answered >= 5
    assert f"(pid {victim}) exited with status -9; starting another (connections" in (
        server.output()
    )
    assert server.stop() == 0
    assert not any(Path(f"/proc/{p}").exists() for p in workers - {victim})


def test_workers_stop_when_their_supervisor_is_killed(start_server: Any, tmp_path: Path) -> None:
    """A supervisor killed outright (SIGKILL: no chance to stop them) must not leave its
    workers serving the port on their own."""
    import os
    import time

    server = start_server("--data-dir", str(tmp_path / "data"), "--workers", "2")
    workers = _workers(server.proc.pid)
    assert len(workers) == 2
    deadline = time.monotonic() + 60  # both up: the signal must reach a serving worker
    while server.output().count("Application startup complete") < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait()
    deadline = time.monotonic() + 30  # SIGTERM: uvicorn's graceful shutdown, then exit
    while any(Path(f"/proc/{p}").exists() for p in workers):
        assert time.monotonic() < deadline, f"workers still running: {workers}"
        time.sleep(0.1)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/healthz", timeout=2)


def test_the_fixture_stops_every_worker_even_one_its_supervisor_cannot(
    start_server: Any, tmp_path: Path
) -> None:
    """The fixture's stop() ends the server's whole process group: a worker that cannot
    stop (SIGSTOP: the supervisor's SIGTERM stays pending) is killed with the supervisor
    once the timeout passes, not left behind for the rest of the test session."""
    import os
    import shutil
    import time

    server = start_server("--data-dir", str(tmp_path / "data"), "--workers", "2")
    workers = _workers(server.proc.pid)
    assert len(workers) == 2
    stuck = sorted(workers)[0]
    os.kill(stuck, signal.SIGSTOP)
    try:
        assert server.stop(timeout_s=2) == -signal.SIGKILL  # the supervisor waits for it
        deadline = time.monotonic() + 10  # orphaned by the kill; reaped by init
        while not all(process_ended(p) for p in workers):
            assert time.monotonic() < deadline, f"workers still running: {workers}"
            time.sleep(0.05)
    finally:
        if not process_ended(stuck):
            os.kill(stuck, signal.SIGKILL)
        # a killed supervisor leaves its statistics directory (the next one removes it)
        for stats in Path("/dev/shm").glob(f"modelport-stats-{server.proc.pid}-*"):
            shutil.rmtree(stats, ignore_errors=True)


def test_the_supervisor_kills_a_stuck_worker_at_its_deadline_and_says_so(
    start_server: Any, tmp_path: Path
) -> None:
    """One deadline for all workers: the longest graceful stop (1 s of shutdown + 3 x 1 s
    of drain) plus the margin. A worker still running then is killed, and the log says
    so: the server's status alone (0) would not tell that a worker's requests were cut."""
    import os
    import time

    server = start_server(
        "--data-dir", str(tmp_path / "data"), "--workers", "2", "--shutdown-timeout", "1"
    )
    workers = _workers(server.proc.pid)
    assert len(workers) == 2
    stuck = sorted(workers)[0]
    os.kill(stuck, signal.SIGSTOP)  # the supervisor's SIGTERM stays pending
    try:
        began = time.monotonic()
        assert server.stop(timeout_s=30) == 0
        assert time.monotonic() - began < 4 + 5 + 5
        assert f"worker (pid {stuck}) was still running" in server.output()
    finally:
        if not process_ended(stuck):
            os.kill(stuck, signal.SIGKILL)


def test_workers_on_a_taken_port_fail_clearly(tmp_path: Path) -> None:
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "modelport", "serve", "--port", str(port), "--workers", "2",
             "--data-dir", str(tmp_path / "data")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    ("host", "workers"),
    [
        ("127.0.0.1", 1),
        ("127.0.0.1", 2),
        pytest.param(
            "::1",
            1,
            marks=pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here"),
        ),
    ],
    ids=str,
)
def test_port_0_start_up_line_says_which_port_the_system_chose(
    tmp_path: Path, host: str, workers: int
) -> None:
    """With --port 0 the start-up line must show the port the system chose, not ":0":
    one process binds it before announcing; several workers' supervisor binds it for
    them (their uvicorn prints no 'running on' line of its own). An IPv6 host is
    bracketed, so the line is a URL that can be pasted."""
    import re
    import time

    from tests.conftest import ServerProcess

    server = ServerProcess(  # the later --port wins over the fixture's
        ["--host", host, "--port", "0", "--workers", str(workers),
         "--data-dir", str(tmp_path / "data")],
        cwd=tmp_path,
    )  # fmt: skip
    url_host = f"[{host}]" if ":" in host else host
    line = rf"serving .* on http://{re.escape(url_host)}:(\d+)" + (
        " with 2" if workers == 2 else "  "
    )
    try:
        deadline = time.monotonic() + 60
        found = None
        while found is None and time.monotonic() < deadline:
            assert server.proc.poll() is None, server.output()
            found = re.search(line, server.output())
            time.sleep(0.05)
        assert found is not None, server.output()
        port = int(found.group(1))
        assert port != 0
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://{url_host}:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        r = httpx.post(
            f"http://{url_host}:{port}/v1/models/iris/predict", json={"instances": [RECORD]}
        )
        assert r.status_code == 200
        if workers == 2:  # each worker loads the models; its lines say which one it is
            # (/readyz came from one of them: the other may still be loading)
            lines = [f"[w{index}] modelport.registry: loaded iris v1" for index in (0, 1)]
            while not all(line in server.output() for line in lines):
                assert time.monotonic() < deadline, server.output()
                time.sleep(0.05)
        server.proc.send_signal(signal.SIGINT)  # Ctrl-C: a clean shutdown, status 0
        assert server.proc.wait(timeout=30) == 0, server.output()
        assert "Application shutdown complete" in server.output()
    finally:
        server.stop()


def test_default_workers_are_one_per_usable_core(start_server: Any, tmp_path: Path) -> None:
    """``workers: auto``: the small demo models with auth off get one process per core."""
    import os

    cores = len(os.sched_getaffinity(0))
    server = start_server("--data-dir", str(tmp_path / "data"))
    r = httpx.post(f"{server.url}/v1/models/iris/predict", json={"instances": [RECORD]})
    assert r.status_code == 200
    server.stop()
    expected = min(cores, 8)
    assert server.output().count("Application startup complete") == expected
    if expected > 1:
        assert f"with {expected} HTTP workers (one per usable core" in server.output()


def test_a_model_that_keeps_blocking_the_loop_moves_off_it_and_health_answers(
    start_server: Any, tmp_path: Path
) -> None:
    """A custom model whose batches sleep runs inline at first (one worker, auto): a
    health check waits for the batch. After three such batches the server moves it to a
    thread, says so, and a health check answers while a batch is still computing."""
    import threading
    import time

    folder = tmp_path / "slow"
    folder.mkdir()
    (folder / "model.py").write_text(
        "import time\n"
        "class Model:\n"
        "    signature = {'inputs': [{'name': 'x', 'dtype': 'float32', 'shape': [-1, 2]}],\n"
        "                 'outputs': [{'name': 'y', 'dtype': 'float32', 'shape': [-1]}]}\n"
        "    def load(self, path):\n"
        "        pass\n"
        "    def predict(self, inputs):\n"
        "        time.sleep(float(inputs['x'][0, 0]))\n"
        "        return {'y': inputs['x'].sum(axis=1)}\n"
    )
    server = start_server(
        str(folder / "model.py"), "--workers", "1", "--data-dir", str(tmp_path / "d")
    )
    url = f"{server.url}/v1/models/model/predict"
    for _ in range(3):
        assert httpx.post(url, json={"inputs": [[0.12, 1]]}, timeout=30).status_code == 200
    deadline = time.monotonic() + 10
    while "run on a thread from now on" not in server.output():
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.05)
    done = threading.Event()

    def long_batch() -> None:
        assert httpx.post(url, json={"inputs": [[3.0, 1]]}, timeout=30).status_code == 200
        done.set()

    worker = threading.Thread(target=long_batch)
    worker.start()
    time.sleep(0.5)  # the 3 s batch is computing
    asked = time.monotonic()
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    assert time.monotonic() - asked < 1.5  # not after the batch's remaining ~2.5 s
    assert not done.is_set()
    worker.join()
    assert done.is_set()
    assert "model v1: 3 batches in a row took over 50 ms" in server.output()


def test_a_hostile_row_costs_its_batch_mates_nothing(start_server: Any, tmp_path: Path) -> None:
    """Under load, requests share batches; a row the model refuses (a value too large to
    scale) must get its 422 alone, not fail the requests batched with it. On the code
    before the split, ~15 % of the good requests in this mix got the hostile row's 422."""
    import asyncio
    import collections

    server = start_server("--data-dir", str(tmp_path / "data"), "--workers", "1")
    url = f"{server.url}/v1/models/iris/predict"
    good, bad = {"instances": [RECORD]}, {"inputs": [[1.7e308, 0, 0, 0]]}
    seen: collections.Counter[tuple[str, int]] = collections.Counter()

    async def client(index: int, until: float) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            sent = 0
            while asyncio.get_running_loop().time() < until:
                hostile = index % 8 == 0 and sent % 4 == 0
                r = await http.post(url, json=bad if hostile else good)
                seen["bad" if hostile else "good", r.status_code] += 1
                if r.status_code == 422:
                    assert r.json()["error"]["code"] == "value_out_of_range"
                sent += 1

    async def load() -> None:
        until = asyncio.get_running_loop().time() + 2.0
        await asyncio.gather(*(client(i, until) for i in range(32)))

    asyncio.run(load())
    assert set(seen) == {("good", 200), ("bad", 422)}, seen
    assert seen["bad", 422] >= 4 and seen["good", 200] >= 100
    stats = httpx.get(f"{server.url}/v1/models/iris").json()["versions"][0]["batching"]["stats"]
    assert stats["split_batches"] >= 1  # hostile rows did share batches, and were split out
    assert httpx.get(f"{server.url}/healthz").status_code == 200
