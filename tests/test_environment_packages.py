"""What a run's environment records: the core's distributions plus those plugins name for its config."""

from __future__ import annotations

import json

from verifily_core.config import TrainConfig
from verifily_core.environment import CORE_PACKAGES, collect_environment, env_hash, package_version, plugin_packages
from verifily_core.plugins import load_registries


def _config(**data):
    return TrainConfig.from_dict({"task": "sft", "base_model": "org/m", "data_paths": {"train": "t"}, **data})


def test_plugins_name_the_distributions_that_shape_a_run():
    regs = load_registries()
    assert plugin_packages(regs, _config()) == []
    assert plugin_packages(regs, _config(lora={"quantization": "4bit"})) == ["bitsandbytes"]
    assert plugin_packages(regs, _config(task="dpo")) == ["trl"]
    env = collect_environment("cpu", packages=plugin_packages(regs, _config(task="dpo")))
    assert set(env["hashed"]["packages"]) == {*CORE_PACKAGES, "trl"}
    assert env["hashed"]["packages"]["trl"] == package_version("trl") is not None
    # the dpo run's hash moves with trl's version; an sft run's does not depend on it
    assert env_hash(env) != env_hash(collect_environment("cpu"))


def test_verify_compares_the_distributions_a_run_recorded(tmp_path):
    from verifily_core.reproduction.verify import check_env

    saved = collect_environment("cpu", packages=["pluggy"])
    (tmp_path / "environment.json").write_text(json.dumps(saved))
    assert check_env(tmp_path, {"env_hash": env_hash(saved)}).ok
    saved["hashed"]["packages"]["pluggy"] = "0.0.1"  # recorded under another version of a plugin's distribution
    (tmp_path / "environment.json").write_text(json.dumps(saved))
    check = check_env(tmp_path, {"env_hash": env_hash(saved)})
    assert not check.ok and check.reason == f"pluggy 0.0.1 vs {package_version('pluggy')}"
