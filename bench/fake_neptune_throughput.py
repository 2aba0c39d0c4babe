"""Float points per second the fake Neptune server serves to neptune_query.fetch_metrics (and raw over HTTP)."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request

TARGET = 1_000_000


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--metrics", type=int, default=5)
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--raw-repeats", type=int, default=3)
    return parser.parse_args()


def _fetch_metrics(proc, total_points: int) -> tuple[float, float]:
    """(points/s of server busy time on endpoint D, points/s of the whole fetch_metrics call)."""
    import neptune_query as nq

    nq.set_api_token(proc.api_token)
    before = proc.request_summary()["busy_s"].get("v3.float_series", 0.0)
    started = time.perf_counter()
    df = nq.fetch_metrics(experiments=".*", attributes="^metrics/", project=proc.info["project"])
    elapsed = time.perf_counter() - started
    busy = proc.request_summary()["busy_s"]["v3.float_series"] - before
    got = int(df.count().sum())
    if got != total_points:
        raise SystemExit(f"fetch_metrics returned {got} points, expected {total_points}")
    return got / busy, got / elapsed


def _access_token(proc) -> str:
    request = urllib.request.Request(
        proc.base_url + "/api/backend/v1/authorization/oauth-token", headers={"X-Neptune-Api-Token": proc.api_token}
    )
    with urllib.request.urlopen(request) as response:
        return json.load(response)["accessToken"]


def _raw_rate(proc, runs: int, metrics: int, points: int, repeats: int) -> float:
    """Endpoint D over HTTP: all points of every series in pages of 1M points, bytes only (no client decoding)."""
    token, project = _access_token(proc), proc.info["project"]
    key = project.split("/")[1].upper().replace("-", "")[:8]
    requests = [
        {
            "requestId": f"{r}-{m}",
            "series": {
                "holder": {"identifier": f"{project}/{key}-{r + 1}", "type": "experiment"},
                "attribute": f"metrics/m{m:03d}",
                "lineage": "NONE",
            },
        }
        for r in range(runs)
        for m in range(metrics)
    ]
    body = json.dumps(
        {
            "requests": requests,
            "perSeriesPointsLimit": points,
            "order": "ascending",
            "stepRange": {"from": None, "to": None},
        }
    ).encode()
    started, received = time.perf_counter(), 0
    for _ in range(repeats):
        request = urllib.request.Request(
            proc.base_url + "/api/leaderboard/v1/proto/attributes/series/float",
            data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request) as response:
            received += len(response.read())
    elapsed = time.perf_counter() - started
    return (received / 32) / elapsed  # 32 bytes a point on the wire for these timestamps


def main() -> int:
    args = _args()
    try:
        from neptune_exporter.fake_neptune import FakeNeptuneProcess
    except ImportError as exc:
        print(f"fake_neptune_throughput: cannot run: {exc}", file=sys.stderr)
        return 2
    serve = [
        "--generate",
        "--runs",
        str(args.runs),
        "--experiments",
        str(args.runs),
        "--params",
        "0",
        "--metrics",
        str(args.metrics),
        "--points",
        str(args.points),
        "--string-series",
        "0",
        "--histograms",
        "0",
        "--files",
        "0",
    ]
    total = args.runs * args.metrics * args.points
    with FakeNeptuneProcess(serve) as proc:
        served_rate, call_rate = _fetch_metrics(proc, total)
        raw_rate = _raw_rate(proc, args.runs, args.metrics, args.points, args.raw_repeats)
    print(f"fake_neptune_throughput: {served_rate:,.0f} points/s (target >= {TARGET:,})")
    print(
        f"  = points served to neptune_query.fetch_metrics per second the server spent on them "
        f"({total:,} points, {args.runs * args.metrics} series)"
    )
    print(f"  raw HTTP endpoint D, bytes only: {raw_rate:,.0f} points/s")
    print(
        f"  whole fetch_metrics call incl. client decoding + DataFrame: {call_rate:,.0f} points/s "
        f"(client-bound: neptune-query decodes ~0.5M points/s per core)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
