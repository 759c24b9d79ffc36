"""Security against real `modelport serve` processes: keys from the CLI while the server
runs, revocation within 1 s, usage under concurrency and across a graceful restart, rate
limits shared through Redis, PostgreSQL state, the --auth none guard, and TLS."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from modelport.cli.keys import keys
from modelport.cli.usage import usage

pytestmark = pytest.mark.e2e

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
IRIS = "/v1/models/iris/predict"
ROW = {"inputs": [[5.1, 3.5, 1.4, 0.2]]}


def cli(group: Any, *args: str) -> Any:
    result = CliRunner().invoke(group, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def create_key(*args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cli(keys, "create", "--json", *args))
    return out


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def repo(demo_data_dir: Path) -> str:
    return str(demo_data_dir / "demo")


def files_contain(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_keys_from_the_cli_while_the_server_runs(
    start_server: Any, tmp_path: Path, repo: str
) -> None:
    data = tmp_path / "data"
    server = start_server("--repository", repo, "--data-dir", str(data), "--auth", "keys")
    url = server.url
    assert httpx.post(url + IRIS, json=ROW).status_code == 401
    created = create_key("--name", "team-a", "--scopes", "predict:iris", "--data-dir", str(data))
    assert created["key"].startswith(f"mp_{created['id']}_")
    deadline = time.monotonic() + 1.0
    status = 0
    while time.monotonic() < deadline:  # a new key works within a second
        status = httpx.post(url + IRIS, json=ROW, headers=auth(created["key"])).status_code
        if status == 200:
            break
        time.sleep(0.05)
    assert status == 200
    r = httpx.post(url + IRIS, json=ROW, headers={"X-API-Key": created["key"]})
    assert r.status_code == 200
    assert r.headers["x-content-type-options"] == "nosniff"
    unknown = httpx.post(url + IRIS, json=ROW, headers=auth(created["key"][:-2] + "zz"))
    assert unknown.status_code == 401

    listed = json.loads(cli(keys, "list", "--json", "--data-dir", str(data)))
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0]

    cli(keys, "revoke", created["id"], "--data-dir", str(data))
    revoked_at = time.monotonic()
    while httpx.post(url + IRIS, json=ROW, headers=auth(created["key"])).status_code != 401:
        assert time.monotonic() - revoked_at < 1.0, "revocation not effective within 1 s"
        time.sleep(0.02)

    assert server.stop() in (0, -15)
    output = server.output()
    secret = created["key"].encode()
    assert not files_contain(data, secret), "plaintext key stored in the data dir"
    assert created["key"] not in output, "plaintext key in the server log"


def test_usage_is_exact_under_concurrency_and_survives_restart(
    start_server: Any, tmp_path: Path, repo: str
) -> None:
    data = tmp_path / "data"
    args = ("--repository", repo, "--data-dir", str(data), "--auth", "keys")
    created = create_key("--name", "load", "--scopes", "predict:*", "--data-dir", str(data))
    server = start_server(*args)
    failures: list[int] = []

    def client() -> None:
        with httpx.Client(base_url=server.url, headers=auth(created["key"])) as c:
            for _ in range(50):
                r = c.post(IRIS, json=ROW)
                if r.status_code != 200:
                    failures.append(r.status_code)

    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert server.stop() in (0, -15)  # graceful: the last counts are flushed on the way out

    def exported() -> list[dict[str, Any]]:
        today = dt.datetime.now(dt.UTC).date().isoformat()
        out = cli(usage, "export", "--format", "json", "--since", today, "--data-dir", str(data))
        rows: list[dict[str, Any]] = json.loads(out)
        return rows

    rows = exported()
    assert len(rows) == 1
    row = rows[0]
    assert (row["key_id"], row["model"], row["version"]) == (created["id"], "iris", "1")
    assert (row["requests"], row["errors"]) == (800, 0)

    again = start_server(*args)
    for _ in range(7):
        assert (
            httpx.post(again.url + IRIS, json=ROW, headers=auth(created["key"])).status_code == 200
        )
    assert again.stop() in (0, -15)
    assert exported()[0]["requests"] == 807
    csv_out = cli(usage, "export", "--format", "csv", "--data-dir", str(data))
    assert csv_out.splitlines()[0].startswith("key_id,model,version,day,requests,rows,errors")


def _redis_up() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping())
    except Exception:
        return False


def _pg_up() -> bool:
    try:
        import psycopg

        psycopg.connect(PG_URL, connect_timeout=2).close()
        return True
    except Exception:
        return False


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    if not _redis_up():
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")
    prefix = f"mp_e2e_{uuid.uuid4().hex[:8]}"
    yield prefix
    from modelport.state.redis import RedisCounterStore

    store = RedisCounterStore(REDIS_URL, prefix=prefix)
    store.delete_all()
    store.close()


def test_rate_limit_429_then_200_and_shared_through_redis(
    start_server: Any, tmp_path: Path, repo: str, redis_prefix: str
) -> None:
    data = tmp_path / "data"
    config = tmp_path / "config.yaml"
    config.write_text(f"state:\n  redis_prefix: {redis_prefix}\n")
    created = create_key(
        "--name",
        "limited",
        "--scopes",
        "predict:iris",
        "--rate",
        "10/min",
        "--data-dir",
        str(data),
    )
    common = ("--repository", repo, "--data-dir", str(data), "--auth", "keys")
    one = start_server(*common, "--redis", REDIS_URL, "--config", str(config))
    two = start_server(*common, "--redis", REDIS_URL, "--config", str(config))
    statuses = []
    for i in range(20):  # alternate between the two processes
        url = (one if i % 2 == 0 else two).url
        r = httpx.post(url + IRIS, json=ROW, headers=auth(created["key"]))
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
            assert r.headers["ratelimit-limit"] == "10"
            assert r.headers["ratelimit-remaining"] == "0"
    assert statuses.count(200) == 10 and statuses.count(429) == 10  # one combined limit


def test_rate_limit_recovers_after_the_window(start_server: Any, tmp_path: Path, repo: str) -> None:
    data = tmp_path / "data"
    created = create_key(
        "--name", "fast", "--scopes", "predict:iris", "--rate", "2/s", "--data-dir", str(data)
    )
    server = start_server("--repository", repo, "--data-dir", str(data), "--auth", "keys")
    h = auth(created["key"])
    codes = [httpx.post(server.url + IRIS, json=ROW, headers=h) for _ in range(3)]
    assert [c.status_code for c in codes] == [200, 200, 429]
    time.sleep(float(codes[2].headers["retry-after"]))
    assert httpx.post(server.url + IRIS, json=ROW, headers=h).status_code == 200


def test_quota_exhaustion_over_http(start_server: Any, tmp_path: Path, repo: str) -> None:
    data = tmp_path / "data"
    created = create_key(
        "--name", "q", "--scopes", "predict:iris", "--quota", "3/day", "--data-dir", str(data)
    )
    server = start_server("--repository", repo, "--data-dir", str(data), "--auth", "keys")
    h = auth(created["key"])
    codes = [httpx.post(server.url + IRIS, json=ROW, headers=h).status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    r = httpx.post(server.url + IRIS, json=ROW, headers=h)
    assert r.status_code == 429 and r.json()["error"]["code"] == "quota_exceeded"
    # the quota survives a restart (it resumes from the stored usage)
    server.stop()
    again = start_server("--repository", repo, "--data-dir", str(data), "--auth", "keys")
    r = httpx.post(again.url + IRIS, json=ROW, headers=h)
    assert r.status_code == 429 and r.json()["error"]["code"] == "quota_exceeded"


def test_postgres_state(start_server: Any, tmp_path: Path, repo: str) -> None:
    if not _pg_up():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    from modelport.state.postgres import PostgresDb

    schema = f"mp_e2e_{uuid.uuid4().hex[:8]}"
    config = tmp_path / "config.yaml"
    config.write_text(f"state:\n  postgres_schema: {schema}\n")
    try:
        created = create_key(
            "--name",
            "pg",
            "--scopes",
            "predict:iris",
            "--state",
            PG_URL,
            "--config",
            str(config),
        )
        server = start_server(
            "--repository",
            repo,
            "--data-dir",
            str(tmp_path / "data"),
            "--auth",
            "keys",
            "--state",
            PG_URL,
            "--config",
            str(config),
        )
        for _ in range(5):
            r = httpx.post(server.url + IRIS, json=ROW, headers=auth(created["key"]))
            assert r.status_code == 200
        assert server.stop() in (0, -15)
        rows = json.loads(
            cli(usage, "export", "--format", "json", "--state", PG_URL, "--config", str(config))
        )
        assert [(r["key_id"], r["requests"]) for r in rows] == [(created["id"], 5)]
        import psycopg

        with psycopg.connect(PG_URL) as conn:
            dump = conn.execute(
                f"SELECT string_agg(t::text, '|') FROM \"{schema}\".mp_keys t"
            ).fetchone()
        assert dump is not None and created["key"] not in (dump[0] or "")
        assert created["id"] in (dump[0] or "")
    finally:
        db = PostgresDb(PG_URL, schema)
        db.drop_schema()
        db.close()


def test_auth_none_refuses_a_public_address(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPORT_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelport",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "1",
            "--data-dir",
            str(tmp_path / "data"),
            "--repository",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "--auth none" in done.stderr and "--insecure" in done.stderr


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls(tmp_path: Path, repo: str) -> None:
    import ssl

    from tests.conftest import ServerProcess

    cert, key = _self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    server = ServerProcess(
        [
            "--repository",
            repo,
            "--data-dir",
            str(tmp_path / "data"),
            "--ssl-certfile",
            str(cert),
            "--ssl-keyfile",
            str(key),
        ],
        cwd=tmp_path,
    )
    try:
        url = f"https://127.0.0.1:{server.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(url + "/readyz", verify=trust, timeout=1)
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and server.proc.poll() is None, server.output()
            time.sleep(0.1)
        r = httpx.post(url + IRIS, json=ROW, verify=trust)
        assert r.status_code == 200
        assert r.headers["strict-transport-security"].startswith("max-age=")
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=2).raise_for_status()
    finally:
        server.stop()


def test_allow_list_over_a_socket_ignores_forged_forwarded_for(
    start_server: Any, tmp_path: Path, repo: str
) -> None:
    data = tmp_path / "data"
    fenced = create_key(
        "--name",
        "fenced",
        "--scopes",
        "predict:iris",
        "--allow-from",
        "10.0.0.0/8",
        "--data-dir",
        str(data),
    )
    local = create_key(
        "--name",
        "local",
        "--scopes",
        "predict:iris",
        "--allow-from",
        "127.0.0.1",
        "--data-dir",
        str(data),
    )
    server = start_server("--repository", repo, "--data-dir", str(data), "--auth", "keys")
    h = auth(fenced["key"])
    assert httpx.post(server.url + IRIS, json=ROW, headers=h).status_code == 403
    forged = {**h, "X-Forwarded-For": "10.1.2.3"}
    assert httpx.post(server.url + IRIS, json=ROW, headers=forged).status_code == 403
    assert httpx.post(server.url + IRIS, json=ROW, headers=auth(local["key"])).status_code == 200
