"""Plugin manager, typed registries, blocking, and a real pip-installed third-party plugin."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from verifily_core import hookimpl
from verifily_core.errors import ConfigError
from verifily_core.interfaces import Metric, Task
from verifily_core.plugins import DIRECT, PLUGIN_KINDS, Registries, Registry, load_registries, make_plugin_manager

EXAMPLE_PLUGIN = Path(__file__).resolve().parent.parent / "examples" / "verifily-example-plugin"

BUILTINS = {"sft", "classification", "dpo", "causal_lm", "seq2seq", "qlora", "local", "managed", "mlflow", "optuna"}


class _Echo(Metric):
    name = "echo"

    def compute(self, predictions, references, rows, **kwargs):
        return 1.0


class EchoPlugin:
    plugin_name = "echo-plugin"

    @hookimpl
    def verifily_register_metrics(self, registry):
        registry.add(_Echo())


class ClashingPlugin:
    plugin_name = "clashing-plugin"

    @hookimpl
    def verifily_register_tasks(self, registry):
        class Fake(Task):
            name = "sft"

        registry.add(Fake())


def test_builtins_are_entry_point_plugins():
    regs = load_registries(make_plugin_manager())
    names = {name for name, plugin in regs.pm.list_name_plugin() if plugin is not None}
    assert BUILTINS <= names
    assert {"sft", "classification", "dpo"} <= set(regs.tasks.names())
    assert {"causal_lm", "seq2seq"} <= set(regs.model_loaders.names())
    assert {"local", "managed"} <= set(regs.backends.names())
    assert regs.tasks.owner("sft") == "sft"


def test_throwaway_plugin_class_registers_a_metric():
    regs = load_registries(make_plugin_manager(entrypoints=False, plugins=[EchoPlugin()]))
    assert regs.metrics.names() == ["echo"]
    assert regs.metrics.owner("echo") == "echo-plugin"


def test_duplicate_names_are_rejected_naming_both_plugins():
    with pytest.raises(ConfigError, match="task 'sft' is registered twice: by plugin 'sft' and by plugin 'clashing-plugin'"):
        load_registries(make_plugin_manager(plugins=[ClashingPlugin()]))


def test_wrong_type_is_rejected():
    class Bad:
        plugin_name = "bad"

        @hookimpl
        def verifily_register_metrics(self, registry):
            registry.add(object())

    with pytest.raises(ConfigError, match="plugin 'bad' registered .* as a metric, but it is not"):
        load_registries(make_plugin_manager(entrypoints=False, plugins=[Bad()]))


def test_unknown_name_lists_the_available_ones():
    regs = load_registries(make_plugin_manager(entrypoints=False, plugins=[EchoPlugin()]))
    with pytest.raises(ConfigError, match=r"unknown metric 'echoo' \(did you mean 'echo'\?\); available: echo"):
        regs.metrics.get("echoo")


def test_registrations_go_through_pluggy_one_plugin_at_a_time():
    class OtherEcho(_Echo):
        name = "echo2"

    class OtherPlugin:
        plugin_name = "other-plugin"

        @hookimpl
        def verifily_register_metrics(self, registry):
            registry.add(OtherEcho())

    class Wrapper:
        plugin_name = "wrapper"
        seen = []

        @hookimpl(wrapper=True)
        def verifily_register_metrics(self, registry):
            before = set(registry.names())
            yield
            self.seen.append(sorted(set(registry.names()) - before))

    regs = load_registries(make_plugin_manager(entrypoints=False, plugins=[EchoPlugin(), OtherPlugin(), Wrapper()]))
    assert Wrapper.seen == [["echo"], ["echo2"]]
    assert (regs.metrics.owner("echo"), regs.metrics.owner("echo2")) == ("echo-plugin", "other-plugin")


def test_a_registry_attributes_additions_to_the_plugin_named_in_the_block():
    registry = Registry("metric", Metric)
    with registry.on_behalf_of("echo-plugin") as same:
        same.add(_Echo())
    registry.add(_Echo(), name="echo-again")
    assert registry.owner("echo") == "echo-plugin" and registry.owner("echo-again") == DIRECT
    with pytest.raises(ConfigError, match="registered twice: by plugin 'echo-plugin' and by plugin 'late'"):
        with registry.on_behalf_of("late"):
            registry.add(_Echo())


def test_the_plugin_kinds_are_the_registries_fields_each_with_its_registration_hook():
    from verifily_core import hookspecs, interfaces

    assert [k.attribute for k in PLUGIN_KINDS] == [f.name for f in attrs.fields(Registries)][1:]
    regs = load_registries(make_plugin_manager(entrypoints=False))
    for kind in PLUGIN_KINDS:
        assert getattr(interfaces, kind.base.__name__) is kind.base
        assert list(inspect.signature(getattr(hookspecs, kind.hook_name)).parameters) == ["registry"]
        assert regs.all()[kind.name] is getattr(regs, kind.attribute)
        assert getattr(regs, kind.attribute).base is kind.base


def test_hookspec_arguments_are_typed_with_classes_that_exist():
    """The spec annotations (imported for type checkers only) resolve to real classes."""
    import ast
    import typing

    from verifily_core import hookspecs

    tree = ast.parse(inspect.getsource(hookspecs))
    block = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    namespace = dict(vars(hookspecs))
    exec(compile(ast.Module(body=block.body, type_ignores=[]), "hookspecs", "exec"), namespace)
    for name, spec in inspect.getmembers(hookspecs, inspect.isfunction):
        if name.startswith("verifily_"):
            hints = typing.get_type_hints(spec, globalns=namespace)
            assert set(inspect.signature(spec).parameters) <= set(hints), f"{name} has an untyped argument"
            assert all(hint is not typing.Any for arg, hint in hints.items() if arg != "return"), name


def test_block_env_var(monkeypatch):
    monkeypatch.setenv("VERIFILY_BLOCK_PLUGINS", "managed, echo-plugin")
    regs = load_registries(make_plugin_manager(plugins=[EchoPlugin()]))
    assert "managed" not in regs.backends and "local" in regs.backends
    assert "echo" not in regs.metrics


def test_hook_implementations_may_take_fewer_arguments():
    class Partial:
        plugin_name = "partial"
        seen = []

        @hookimpl
        def verifily_validate_config(self):
            return ["$.x: from a plugin"]

    from verifily_core.config import TrainConfig

    regs = load_registries(make_plugin_manager(plugins=[Partial()]))
    cfg = TrainConfig.from_dict({"task": "sft", "base_model": "org/m", "data_paths": {"train": "t"}})
    with pytest.raises(ConfigError, match=r"\$\.x: from a plugin"):
        cfg.validate(regs)


def _verifily(env, *args, cwd=None):
    return subprocess.run([sys.executable, "-c", "from verifily_core.cli import main; main()", *args],
                          env=env, cwd=cwd, capture_output=True, text=True)


def test_pip_installed_plugin_is_listed_with_its_distribution(installed_example):
    res = _verifily(installed_example, "plugins", "--format", "json")
    assert res.returncode == 0, res.stderr
    records = {r["name"]: r for r in json.loads(res.stdout)}
    assert records["example"]["distribution"] == "verifily-example-plugin"
    assert records["example"]["version"] == "0.2.0"
    assert records["example"]["registers"] == {"metric": ["response_length"], "slicer": ["first_letter"],
                                               "backend": ["subprocess"]}
    assert records["example"]["commands"] == ["longest"]
    for name in BUILTINS:
        assert records[name]["distribution"] == "verifily-train"


def test_pip_installed_plugin_metric_is_usable_in_a_config(installed_example, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: sft\nbase_model: org/m\ndata_paths: {train: t.jsonl}\neval: {metrics: [response_length]}\n")
    with_plugin = _verifily(installed_example, "train", "--config", str(cfg), "--dry-run", "--no-data-check")
    assert with_plugin.returncode == 0, with_plugin.stderr
    without = _verifily(dict(installed_example, VERIFILY_BLOCK_PLUGINS="example"), "train", "--config", str(cfg),
                        "--dry-run", "--no-data-check")
    assert without.returncode == 1
    assert "$.eval.metrics[0]: unknown metric 'response_length'" in without.stderr


def test_a_pip_installed_plugin_adds_a_command(installed_example, tmp_path):
    """The command hook: `verifily --help` lists the plugin's command and it runs like a built-in."""
    help_text = _verifily(installed_example, "--help").stdout
    assert "longest" in help_text and "Show the longest predictions" in help_text
    (tmp_path / "eval").mkdir()
    rows = [{"index": i, "prediction": p, "tags": {"source": s}} for i, (p, s) in
            enumerate([("ab", "human"), ("abcdef", "synthetic"), ("abcd", "human")])]
    (tmp_path / "eval" / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = _verifily(installed_example, "longest", "--run", str(tmp_path), "-n", "2")
    assert res.returncode == 0, res.stderr
    assert [line.split()[:3] for line in res.stdout.splitlines()] == [["6", "row", "1"], ["4", "row", "2"]]
    assert "[source=synthetic]" in res.stdout.splitlines()[0]
    missing = _verifily(installed_example, "longest", "--run", str(tmp_path / "nope"))
    assert missing.returncode == 4 and "no predictions" in missing.stderr and "Traceback" not in missing.stderr
    blocked = _verifily(dict(installed_example, VERIFILY_BLOCK_PLUGINS="example"), "longest", "--run", str(tmp_path))
    assert blocked.returncode == 1 and "No such command 'longest'" in blocked.stderr


def test_a_plugin_command_may_not_take_a_name_in_use():
    import click

    from verifily_core.plugins import collect_commands

    class Adds:
        plugin_name = "adds"

        @hookimpl
        def verifily_register_commands(self, cli):
            @cli.command(name="hello")
            def hello():
                click.echo("hi")

    class Clashes:
        plugin_name = "clashes"

        @hookimpl
        def verifily_register_commands(self, cli):
            cli.add_command(click.Command("train"))

    found = collect_commands(make_plugin_manager(entrypoints=False, plugins=[Adds()]), reserved=["train"])
    assert list(found) == ["hello"] and found["hello"][0] == "adds"
    with pytest.raises(ConfigError, match="plugin 'clashes' adds the command 'train', which verifily \\(built in\\) "
                                          "already provides"):
        collect_commands(make_plugin_manager(entrypoints=False, plugins=[Adds(), Clashes()]), reserved=["train"])
    twice = type("Twice", (Adds,), {"plugin_name": "twice"})
    with pytest.raises(ConfigError, match="plugin '(adds|twice)' adds the command 'hello', which plugin '(adds|twice)'"):
        collect_commands(make_plugin_manager(entrypoints=False, plugins=[Adds(), twice()]))


@pytest.mark.slow
def test_the_example_plugins_own_tests_pass_against_the_pip_installed_package(installed_example, tmp_path):
    """The plugin package's tests, run as its author would after ``pip install``: the last trains
    a tiny model with the fixtures of Verifily's pytest plugin, which the package does not define."""
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE_PLUGIN / "tests")],
                         cwd=tmp_path, env=installed_example, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert " passed" in res.stdout  # (rc 5 would mean nothing was collected)


@pytest.mark.slow
def test_pip_installed_backend_trains_a_run(installed_example, tmp_path, verifily_tiny_llama_dir):
    from verifily_core.testing import make_sft_rows, write_jsonl

    data = write_jsonl(tmp_path / "train.jsonl", make_sft_rows(16, seed=1))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"task: sft\nbase_model: {verifily_tiny_llama_dir}\ndata_paths: {{train: {data}}}\n"
                   f"training: {{max_steps: 2, batch_size: 4, max_seq_length: 48}}\n"
                   f"output: {{dir: {tmp_path / 'runs'}}}\n")
    res = _verifily(installed_example, "train", "--config", str(cfg), "--mode", "subprocess")
    assert res.returncode == 0, res.stderr
    assert "Run completed: run_" in res.stdout
    meta = json.loads(next((tmp_path / "runs").glob("run_*/run_meta.json")).read_text())
    assert meta["status"] == "completed"


def test_help_lists_plugin_commands_from_an_index_rebuilt_when_plugins_change(tmp_path, monkeypatch):
    """`verifily --help` reads the plugin-command index while nothing it depends on changed."""
    from click.testing import CliRunner

    from verifily_core.cli import cli
    from verifily_core.command_index import INDEX_FILE, environment_key

    monkeypatch.setenv("VERIFILY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("VERIFILY_BLOCK_PLUGINS", raising=False)
    first = CliRunner().invoke(cli, ["--help"])
    assert first.exit_code == 0 and "  train " in first.stdout
    index_path = tmp_path / "cache" / INDEX_FILE
    index = json.loads(index_path.read_text())
    assert index["key"] == environment_key()
    assert index["commands"] == {"hpo": "Search hyperparameters with Optuna; every trial is a sealed run."}  # optuna's
    assert "  hpo " in first.stdout
    recorded = [f for f, _, _ in index["files"]]
    assert any(f.endswith("entry_points.txt") for f in recorded)
    assert any(f.endswith("verifily_sft/__init__.py") for f in recorded)  # a plugin's code counts

    plugin_file = tmp_path / "plugin.py"
    plugin_file.write_text("# v1")
    st = plugin_file.stat()
    forged = {**index, "files": [*index["files"], [str(plugin_file), st.st_size, st.st_mtime_ns]],
              "commands": {"ghost": "A command only the index knows."}}
    index_path.write_text(json.dumps(forged))
    assert "  ghost      A command only the index knows." in CliRunner().invoke(cli, ["--help"]).stdout
    plugin_file.write_text("# v2, edited")  # a recorded plugin file changed: rebuilt from the plugins
    assert "ghost" not in CliRunner().invoke(cli, ["--help"]).stdout
    index_path.write_text(json.dumps(forged | {"files": index["files"]}))
    assert "ghost" in CliRunner().invoke(cli, ["--help"]).stdout
    monkeypatch.setenv("VERIFILY_BLOCK_PLUGINS", "metrics")  # another set of plugins: rebuilt
    assert "ghost" not in CliRunner().invoke(cli, ["--help"]).stdout
    assert json.loads(index_path.read_text())["key"] == environment_key()
