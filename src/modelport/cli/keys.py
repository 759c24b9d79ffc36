"""``modelport keys create|list|revoke|rotate``: manage API keys in the server's state store.

Works while a server runs on the same state: it picks up changes within a second.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click
import orjson

from modelport.cli._state import local_actor, opened, settings_for, state_options
from modelport.policy import keys as key_rules
from modelport.policy.audit import audit
from modelport.policy.keys import IssuedKey, KeyManager
from modelport.policy.wallclock import WallClock
from modelport.state.interfaces import KeyRecord


def _dump(value: object) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _show_issued(issued: IssuedKey, as_json: bool, verb: str) -> None:
    if as_json:
        _dump(issued.to_dict())
        return
    r = issued.record
    click.echo(f"{verb} key {r.id} ({r.name}), scopes: {' '.join(r.scopes)}")
    click.echo("")
    click.echo(f"    {issued.key}")
    click.echo("")
    click.secho(
        "This is the only time the key is shown: store it now (only its hash is kept).",
        fg="yellow",
        err=True,
    )


@click.group()
def keys() -> None:
    """Create, list, revoke and rotate API keys.

    \b
    Examples:
      modelport keys create --name team-a --scopes 'predict:iris,read' --rate 10/s
      modelport keys list
      modelport keys revoke KEY_ID
    """


@keys.command("create")
@click.option("--name", required=True, help="Who the key is for (shown in lists and usage).")
@click.option(
    "--scopes",
    required=True,
    help="Comma-separated: predict:<model> (with * wildcards), read, admin, or *.",
)
@click.option("--rate", help="Rate limit, N/s or N/min [server default].")
@click.option("--burst", type=int, help="Requests allowed at once [N of --rate].")
@click.option("--quota", help="Quota, N/day or N/month [server default].")
@click.option("--expires", help="Lifetime, e.g. 90d, 12h, 2w [never].")
@click.option("--allow-from", help="Comma-separated IPs/CIDRs the key may be used from [any].")
@click.option("--json", "as_json", is_flag=True, help='Print {"id": ..., "key": ..., ...}.')
@state_options
def create(
    name: str,
    scopes: str,
    rate: str | None,
    burst: int | None,
    quota: str | None,
    expires: str | None,
    allow_from: str | None,
    as_json: bool,
    data_dir: Path | None,
    state_url: str | None,
    config_file: Path | None,
) -> None:
    """Create a key and print it (once)."""
    settings = settings_for(data_dir, state_url, config_file)
    clock = WallClock()
    with opened(settings) as stores:
        issued = KeyManager(stores.keys, clock).create(
            name,
            scopes,
            rate=rate,
            burst=burst,
            quota=quota,
            expires=expires,
            allow_from=[a for a in (allow_from or "").split(",") if a.strip()],
        )
    audit(local_actor(), "keys.create", issued.record.id, at=clock.now(), name=name)
    _show_issued(issued, as_json, "created")


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--all", "show_all", is_flag=True, help="Include revoked and expired keys.")
@state_options
def list_keys(
    as_json: bool,
    show_all: bool,
    data_dir: Path | None,
    state_url: str | None,
    config_file: Path | None,
) -> None:
    """List keys (ids, names, scopes, limits; never the secrets)."""
    settings = settings_for(data_dir, state_url, config_file)
    now = WallClock().now()
    with opened(settings) as stores:
        records = KeyManager(stores.keys, WallClock()).list()
    if not show_all:
        records = [r for r in records if key_rules.status(r, now) == "active"]
    if as_json:
        _dump([key_rules.describe(r, now) for r in records])
        return
    _table(records, now)


def _table(records: list[KeyRecord], now: float) -> None:
    if not records:
        click.echo("no keys")
        return
    width = max(4, *(len(r.name) for r in records))
    click.echo(f"{'ID':<12}  {'NAME':<{width}}  {'STATUS':<7}  {'LAST USED':<16}  LIMITS  SCOPES")
    for r in records:
        limits = ",".join(x for x in (r.rate, r.quota) if x) or "-"
        click.echo(
            f"{r.id:<12}  {r.name:<{width}}  {key_rules.status(r, now):<7}  "
            f"{_when(r.last_used_at):<16}  {limits:<6}  {' '.join(r.scopes)}"
        )


@keys.command("revoke")
@click.argument("key_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@state_options
def revoke(
    key_id: str,
    as_json: bool,
    data_dir: Path | None,
    state_url: str | None,
    config_file: Path | None,
) -> None:
    """Revoke a key; a running server refuses it within a second."""
    settings = settings_for(data_dir, state_url, config_file)
    clock = WallClock()
    with opened(settings) as stores:
        record = KeyManager(stores.keys, clock).revoke(key_id)
    audit(local_actor(), "keys.revoke", key_id, at=clock.now())
    if as_json:
        _dump(key_rules.describe(record, clock.now()))
    else:
        click.echo(f"revoked key {record.id} ({record.name})")


@keys.command("rotate")
@click.argument("key_id")
@click.option("--json", "as_json", is_flag=True, help='Print {"id": ..., "key": ..., ...}.')
@state_options
def rotate(
    key_id: str,
    as_json: bool,
    data_dir: Path | None,
    state_url: str | None,
    config_file: Path | None,
) -> None:
    """Give a key a new secret (same id, scopes, limits); the old secret stops working."""
    settings = settings_for(data_dir, state_url, config_file)
    clock = WallClock()
    with opened(settings) as stores:
        issued = KeyManager(stores.keys, clock).rotate(key_id)
    audit(local_actor(), "keys.rotate", key_id, at=clock.now())
    _show_issued(issued, as_json, "rotated")
