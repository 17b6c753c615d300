"""The self-host runner interface: a job serialized to plain data (no data rows) and run on the
machine holding the data gives a sealed run that verifies; a changed dataset or a missing plugin
is refused before anything trains."""

from __future__ import annotations

import json

import pytest
from test_train_local import make_config

from verifily_core.errors import ConfigError, DataError
from verifily_core.reproduction.verify import verify_run
from verifily_core.selfhost import run_serialized_job, serialize_job
from verifily_core.testing import make_sft_rows, write_jsonl

pytestmark = pytest.mark.slow


def test_a_serialized_job_runs_into_a_sealed_run_that_verifies(tmp_path, verifily_tiny_llama_dir):
    config = make_config(tmp_path, verifily_tiny_llama_dir, max_steps=2)
    job = json.loads(json.dumps(serialize_job(config)))  # it travels as JSON
    assert set(job) == {"format_version", "config", "config_hash", "dataset", "plugins"}
    assert job["dataset"]["content_hash"].startswith("sha256:") and job["plugins"] == ["local", "sft"]
    train_rows = (tmp_path / "data" / "train.jsonl").read_text().splitlines()
    assert not any(row[:40] in json.dumps(job) for row in train_rows)  # no data leaves with the job

    run = run_serialized_job(job)
    assert run.status == "completed" and run.config_hash == job["config_hash"]
    assert run.data_hash == job["dataset"]["content_hash"]
    assert verify_run(run.path).verdict == "MATCH"

    missing = {**job, "plugins": [*job["plugins"], "not_installed"]}
    with pytest.raises(ConfigError, match="not_installed not installed"):
        run_serialized_job(missing)
    write_jsonl(tmp_path / "data" / "train.jsonl", make_sft_rows(47, seed=1))
    with pytest.raises(DataError, match="content hash"):
        run_serialized_job(job)
