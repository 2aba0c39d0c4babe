"""Series pages of the Neptune 2.x client as arrays: through the client's own reading (its point objects; the source
audit and string series), and, for float series, the same request without its per-point objects (the export)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# What `FloatSeries._fetch_values_from_backend` costs a 1,000-point page besides the request (py-spy, in the client's
# GIL): bravado's models for the response (47 %), the client's FloatPointValue per point (17 %). Both go here.


@dataclass(frozen=True)
class SeriesPage:
    """Points of one series read as arrays: steps (a point without a step gets its index), values (float64 for
    float series, a list for string series), timestamps (ms); `total`: the series' length the server reported."""

    total: int
    steps: np.ndarray
    values: Any
    timestamps: np.ndarray

    def __len__(self) -> int:
        return int(self.steps.size)


PageReader = Callable[[int, int], SeriesPage]  # (offset, limit) → the points from offset, at most limit


def points_to_arrays(points: list[Any], first_index: int) -> tuple[np.ndarray, list, np.ndarray]:
    """Client series points (step, value, timestampMillis) → steps, values, ms timestamps (a missing step → its index)."""
    steps = np.fromiter(
        (p.step if p.step is not None else first_index + i for i, p in enumerate(points)),
        dtype=np.float64,
        count=len(points),
    )
    timestamps = np.fromiter((p.timestampMillis for p in points), dtype=np.int64, count=len(points))
    return steps, [p.value for p in points], timestamps


def client_pages(handle: Any) -> PageReader:
    """Pages through the client's own `_fetch_values_from_backend` (its point objects)."""

    def read(offset: int, limit: int) -> SeriesPage:
        answer = handle._fetch_values_from_backend(offset, limit)
        steps, values, timestamps = points_to_arrays(list(answer.values), offset)
        return SeriesPage(int(answer.totalItemCount), steps, values, timestamps)

    return read


def float_pages(handle: Any) -> PageReader:
    """Pages of a float series: the client's request (`getFloatSeriesValues`, its URL, token, timeouts and retry
    handler), its JSON answer read straight into arrays, without bravado's response models or the client's points.
    A 404 is the client's FetchAttributeNotFoundException; other HTTP errors are bravado's, as the client raises."""
    from bravado.exception import HTTPNotFound, make_http_exception
    from neptune.common.backends.utils import with_api_exceptions_handler
    from neptune.exceptions import FetchAttributeNotFoundException
    from neptune.internal.backends.hosted_client import DEFAULT_REQUEST_KWARGS
    from neptune.internal.backends.swagger_client_wrapper import ApiMethodWrapper
    from neptune.internal.utils.paths import path_to_str

    wrapper = handle._backend.leaderboard_client.api.getFloatSeriesValues
    container_id, path = handle._container_id, path_to_str(handle._path)

    @with_api_exceptions_handler
    def read(offset: int, limit: int) -> SeriesPage:
        future = wrapper._api_method(
            experimentId=container_id, attribute=path, limit=limit, offset=offset, **DEFAULT_REQUEST_KWARGS
        )
        response = future._get_incoming_response()  # the request as the client sends it, answer not unmarshalled
        if not 200 <= response.status_code < 300:
            error = make_http_exception(response=response)
            if isinstance(error, HTTPNotFound):
                raise FetchAttributeNotFoundException(path)
            ApiMethodWrapper.handle_neptune_http_errors(response, exception=error)  # the client's mapping: raises
            raise error
        return float_page_of(response.json(), offset)

    return read


def float_page_of(body: dict, offset: int) -> SeriesPage:
    """A `FloatSeriesValues` JSON answer (`{totalItemCount, values: [{step, value, timestampMillis}]}`) read from
    `offset` as arrays; a missing step is the point's index, a missing value NaN (as the client's points give)."""
    points = body.get("values") or []
    steps = np.array([point.get("step") for point in points], dtype=np.float64)
    if steps.size and np.isnan(steps).any():
        missing = np.flatnonzero(np.isnan(steps))
        steps[missing] = offset + missing
    values = np.array([point.get("value") for point in points], dtype=np.float64)
    timestamps = np.fromiter((point["timestampMillis"] for point in points), dtype=np.int64, count=len(points))
    return SeriesPage(int(body.get("totalItemCount") or 0), steps, values, timestamps)


def exact_page(read: PageReader, offset: int, count: int) -> SeriesPage:
    """`count` points from `offset` (fewer only at the series' end), however few the server sends a call."""
    pages: list[SeriesPage] = []
    got = 0
    while got < count:
        page = read(offset + got, count - got)
        if not len(page):
            break
        pages.append(page)
        got += len(page)
    return joined(pages) if pages else SeriesPage(0, np.empty(0), [], np.empty(0, dtype=np.int64))


def joined(pages: list[SeriesPage]) -> SeriesPage:
    """One page of consecutive pages (the total of the last)."""
    if len(pages) == 1:
        return pages[0]
    values: Any = (
        np.concatenate([p.values for p in pages])
        if isinstance(pages[0].values, np.ndarray)
        else [v for p in pages for v in p.values]
    )
    return SeriesPage(
        pages[-1].total,
        np.concatenate([p.steps for p in pages]),
        values,
        np.concatenate([p.timestamps for p in pages]),
    )
