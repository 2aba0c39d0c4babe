"""GoodSeed target: exported runs become runs in GoodSeed's local storage (`--goodseed-home`), one SQLite file each.

Modules: `names` (home, project template, run ids, keys, exact REAL steps), `writer` (one run through GoodSeed's
storage API), `loader` (GoodseedLoader: checks, idempotent load, atomic swap-in). The client is imported lazily:
a missing `goodseed` is one line naming the extra.
"""

from neptune_exporter.loaders.goodseed.loader import GOODSEED, LOADING_SUFFIX, GoodseedLoader
from neptune_exporter.loaders.goodseed.names import (
    DEFAULT_PROJECT_TEMPLATE,
    EXTRA_HINT,
    NAN_PREFIX,
    RENAMED_PREFIX,
    goodseed_home,
    goodseed_key,
    goodseed_run_id,
    project_name,
)
from neptune_exporter.loaders.goodseed.writer import NOT_LOADED_REASON, GoodseedRunWriter

__all__ = [
    "DEFAULT_PROJECT_TEMPLATE",
    "EXTRA_HINT",
    "GOODSEED",
    "LOADING_SUFFIX",
    "NAN_PREFIX",
    "NOT_LOADED_REASON",
    "RENAMED_PREFIX",
    "GoodseedLoader",
    "GoodseedRunWriter",
    "goodseed_home",
    "goodseed_key",
    "goodseed_run_id",
    "project_name",
]
