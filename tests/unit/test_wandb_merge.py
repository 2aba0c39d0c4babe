"""Step merge and W&B naming: order, bounded spill files, one step never split, deterministic names."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pyarrow as pa
import pytest

from neptune_exporter.errors import InvalidOptionError
from neptune_exporter.loaders.base import WANDB
from neptune_exporter.loaders.step_merge import StepSpill
from neptune_exporter.loaders.wandb import WandbKeyMap, artifact_name, wandb_project_name, wandb_run_id

SCHEMA = pa.schema([pa.field("step", pa.int64()), pa.field("key", pa.int32())])


def _merge(chunks, chunk_rows, block_rows):
    with StepSpill(SCHEMA, chunk_rows=chunk_rows, block_rows=block_rows) as spill:
        for steps, key in chunks:
            spill.add(
                pa.table(
                    {"step": np.asarray(steps, np.int64), "key": np.full(len(steps), key, np.int32)}, schema=SCHEMA
                )
            )
        return [t.to_pydict() for t in spill.merged()]


@pytest.mark.parametrize("chunk_rows,block_rows", [(10**6, 10**6), (7, 3), (1, 1), (50, 4)])
def test_merged_tables_are_step_ordered_complete_and_never_split_a_step(chunk_rows, block_rows):
    rng = np.random.default_rng(7)
    # attributes stored one after another, each sorted, interleaving in steps; plus one out-of-order attribute
    chunks = [(np.arange(0, 60, 2), 0), (np.arange(1, 60, 3), 1), (rng.permutation(40), 2), (np.full(9, 30), 3)]
    tables = _merge(chunks, chunk_rows, block_rows)
    steps = [s for t in tables for s in t["step"]]
    assert steps == sorted(steps)
    expected = sorted((int(s), k) for c, k in chunks for s in c)
    assert sorted(zip(steps, [k for t in tables for k in t["key"]], strict=True)) == expected
    seen = [set(t["step"]) for t in tables]
    for a, b in pairwise(seen):
        assert max(a) < min(b)  # a step lives in one table only


def test_spill_writes_files_only_beyond_one_chunk(tmp_path):
    with StepSpill(SCHEMA, tmp_path, chunk_rows=5, block_rows=2) as spill:
        spill.add(pa.table({"step": np.arange(12, dtype=np.int64)[::-1], "key": np.zeros(12, np.int32)}, schema=SCHEMA))
        assert len(list(tmp_path.rglob("*.arrow"))) == 1
        assert [s for t in spill.merged() for s in t["step"].to_pylist()] == list(range(12))
    assert not list(tmp_path.rglob("*.arrow"))


def test_run_ids_are_deterministic_valid_and_distinct():
    first = wandb_run_id("ws/p", "My Run/1")
    assert first == wandb_run_id("ws/p", "My Run/1")
    assert all(c.isalnum() or c in "-_" for c in first) and first == first.lower() and len(first) <= 64
    assert first != wandb_run_id("ws/other", "My Run/1")
    assert wandb_run_id("ws/p", "RUN-1") != wandb_run_id("ws/p", "run-1")


def test_project_names_follow_the_template():
    assert wandb_project_name("team/vision", None) == "vision"
    assert wandb_project_name("team/vision", "{workspace}-{project}") == "team-vision"
    with pytest.raises(InvalidOptionError, match="project-template"):
        wandb_project_name("team/vision", "{nope}")


def test_keys_keep_slashes_and_map_reserved_and_invalid_keys_without_collisions():
    keymap = WandbKeyMap(WANDB)
    assert keymap("metrics/loss") == "metrics/loss"
    mapped = {k: keymap(k) for k in ["a#b", "a?b", "_step", "_timestamp", "a_b"]}
    assert len(set(mapped.values())) == len(mapped)
    assert not any(v.startswith("_") for v in mapped.values())
    assert mapped["a_b"] == "a_b" and set(keymap.renamed) == {"a#b", "a?b", "_step", "_timestamp"}


def test_artifact_names_are_unique_per_run_and_attribute():
    names = {artifact_name("run-1", k) for k in ["files/a", "files_a", "files/b"]}
    assert len(names) == 3 and all(len(n) <= 128 for n in names)
    assert artifact_name("run-1", "x") != artifact_name("run-2", "x")
