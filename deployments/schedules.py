"""Named schedules of the served export deployments, each with its own parameters (`neptune-exporter schedule`).

A schedule is a Prefect deployment schedule of `export/<source>` (the deployment `neptune-exporter serve` serves)
whose slug is its name and whose parameters (projects, selection, absolute paths, workers) override the
deployment's. The scheduler creates its runs and the serving process runs them; flows/guard.py keeps runs of one
data path from overlapping or running out of order.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.client.schemas.objects import DeploymentSchedule
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
from prefect.exceptions import ObjectNotFound

from neptune_exporter.errors import InvalidOptionError

SCHEDULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
EXPORT_FLOW = "export"
NEXT_RUNS = 3


@dataclass(frozen=True)
class ScheduledExport:
    """One named schedule of an export deployment: when, with which parameters, and its next start times."""

    deployment: str
    name: str
    active: bool
    when: str
    parameters: dict[str, Any]
    next_runs: list[datetime]

    def lines(self) -> list[str]:
        """What `neptune-exporter schedule` prints for it."""
        head = f"{self.deployment} · schedule {self.name!r} · {self.when}" + ("" if self.active else " · paused")
        rows = [head] + [f"  {key}: {json.dumps(value)}" for key, value in self.parameters.items()]
        rows.append("  next runs: " + (", ".join(t.isoformat(timespec="seconds") for t in self.next_runs) or "none"))
        return rows


def require_api_url() -> str:
    """PREFECT_API_URL, or InvalidOptionError saying how to get a server (a schedule needs one that keeps running)."""
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        raise InvalidOptionError(
            "PREFECT_API_URL is not set: a schedule lives on a Prefect server that keeps running",
            "start `neptune-exporter serve` and export PREFECT_API_URL=http://127.0.0.1:4200/api (the URL it prints)",
        )
    return url


def schedule_of(cron: str | None, interval: float | None, timezone: str | None) -> CronSchedule | IntervalSchedule:
    """A cron or interval schedule (exactly one of them) in `timezone` (IANA name, default UTC)."""
    if (cron is None) == (interval is None):
        raise InvalidOptionError(
            "give exactly one of --cron and --interval", "e.g. --cron '0 2 * * *' or --interval 3600"
        )
    zone = timezone or "UTC"
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidOptionError(
            f"--timezone {zone!r} is not a time zone", "use an IANA name, e.g. UTC or Europe/Berlin"
        ) from None
    if interval is not None:
        if interval <= 0:
            raise InvalidOptionError(
                f"--interval {interval:g} is not positive", "pass the seconds between runs, e.g. 3600"
            )
        return IntervalSchedule(interval=timedelta(seconds=interval), timezone=zone)
    try:
        return CronSchedule(cron=cron, timezone=zone)
    except ValueError:
        raise InvalidOptionError(
            f"--cron {cron!r} is not a cron expression", "e.g. --cron '0 2 * * *' (02:00 daily)"
        ) from None


def check_name(name: str) -> str:
    if not SCHEDULE_NAME.match(name):
        raise InvalidOptionError(
            f"schedule name {name!r} is not usable", "use letters, digits, '.', '_' or '-', e.g. nightly"
        )
    return name


def upsert(
    name: str, source: str, parameters: dict[str, Any], schedule: CronSchedule | IntervalSchedule
) -> ScheduledExport:
    """Create or replace the schedule `name` of `export/<source>` with these parameters; what it now is."""
    deployment_name = f"{EXPORT_FLOW}/{source}"
    with get_client(sync_client=True) as client:
        deployment = read_export_deployment(client, deployment_name)
        existing = next((s for s in deployment.schedules if s.slug == name), None)
        if existing is None:
            client.create_deployment_schedules(deployment.id, [(schedule, True)], parameters=parameters, slug=name)
        else:
            client.update_deployment_schedule(
                deployment.id, existing.id, active=True, schedule=schedule, parameters=parameters, slug=name
            )
        stored = next(s for s in client.read_deployment_schedules(deployment.id) if s.slug == name)
    return describe(deployment_name, deployment.parameters, stored)


def remove(name: str, source: str) -> bool:
    """Delete the schedule `name` of `export/<source>` (its planned runs go with it); False when there was none."""
    with get_client(sync_client=True) as client:
        deployment = read_export_deployment(client, f"{EXPORT_FLOW}/{source}")
        found = [s for s in deployment.schedules if s.slug == name]
        for schedule in found:
            client.delete_deployment_schedule(deployment.id, schedule.id)
    return bool(found)


def list_all() -> list[ScheduledExport]:
    """Every schedule of every export deployment on the server."""
    with get_client(sync_client=True) as client:
        deployments = client.read_deployments(flow_filter=FlowFilter(name=FlowFilterName(any_=[EXPORT_FLOW])))
    return [describe(f"{EXPORT_FLOW}/{d.name}", d.parameters, s) for d in deployments for s in d.schedules]


def read_export_deployment(client, deployment_name: str):
    try:
        return client.read_deployment_by_name(deployment_name)
    except ObjectNotFound:
        raise InvalidOptionError(
            f"no deployment {deployment_name} on {require_api_url()}",
            "start `neptune-exporter serve` against this server first (it registers the deployments)",
        ) from None


def describe(deployment_name: str, defaults: dict[str, Any], stored: DeploymentSchedule) -> ScheduledExport:
    """The schedule as shown: the parameters its runs get (deployment defaults overridden by its own)."""
    return ScheduledExport(
        deployment=deployment_name,
        name=stored.slug or str(stored.id),
        active=stored.active,
        when=when_text(stored.schedule),
        parameters={**defaults, **stored.parameters},
        next_runs=next_start_times(stored.schedule),
    )


def when_text(schedule: Any) -> str:
    if isinstance(schedule, IntervalSchedule):
        return (
            f"every {schedule.interval.total_seconds():g} s from {schedule.anchor_date.isoformat(timespec='seconds')}"
        )
    if isinstance(schedule, CronSchedule):
        return f"cron {schedule.cron!r} ({schedule.timezone or 'UTC'})"
    return type(schedule).__name__


def next_start_times(schedule: Any, count: int = NEXT_RUNS) -> list[datetime]:
    """The next start times, computed as the Prefect scheduler computes them."""
    from prefect.server.schemas import schedules as server_schedules

    kinds = {IntervalSchedule: server_schedules.IntervalSchedule, CronSchedule: server_schedules.CronSchedule}
    kind = kinds.get(type(schedule))
    if kind is None:
        return []
    dates = asyncio.run(kind.model_validate(schedule.model_dump(mode="json")).get_dates(n=count))
    return [datetime.fromisoformat(d.isoformat()) for d in dates]
