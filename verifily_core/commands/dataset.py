"""``verifily dataset``: create, list, show, verify and diff dataset versions in the local store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from verifily_core.cli import GlobalState
from verifily_core.commands import format_option
from verifily_core.console import note, out, style

store_option = click.option("--store", "store", default=None, metavar="DIR",
                            help="Dataset store directory [env: VERIFILY_DATASETS_DIR; default ~/.verifily/datasets].")
MAX_VALUES = 5
"""Values shown per tag key before the rest are counted ("and 312 more"), unless ``--all``."""


def tag_options(command: Any) -> Any:
    """``--tags KEY,...`` and ``--all``: which tag keys to show, and every value of each."""
    command = click.option("--all", "all_values", is_flag=True,
                           help=f"Show every value of every tag key (default: the {MAX_VALUES} largest per key).")(command)
    return click.option("--tags", metavar="KEY,...", help="Show only these tag keys.")(command)


def _tag_keys(tags: str | None, known: set[str]) -> set[str] | None:
    """The ``--tags`` keys (``None``: all); an unknown key is a usage error naming the known ones."""
    if not tags:
        return None
    wanted = {t.strip() for t in tags.split(",") if t.strip()}
    unknown = sorted(wanted - known)
    if unknown:
        raise click.UsageError(f"--tags: no tag key {', '.join(unknown)}; the version's tag keys: "
                               f"{', '.join(sorted(known)) or '(none)'}")
    return wanted


def _by_key(labels: dict[str, Any], weight: Any, all_values: bool) -> list[tuple[str, Any]]:
    """``(label, value)`` rows grouped by tag key (keys sorted), each key's labels by ``weight``
    descending; past :data:`MAX_VALUES` a ``("... and N more <key> values", None)`` row, unless
    ``all_values``."""
    from verifily_core.slices import slice_keys

    groups: dict[str, list[tuple[str, Any]]] = {}
    for label, value in labels.items():
        groups.setdefault(slice_keys(label)[0], []).append((label, value))
    rows: list[tuple[str, Any]] = []
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda item: (-weight(item[1]), item[0]))
        shown = members if all_values or len(members) <= MAX_VALUES else members[:MAX_VALUES]
        rows += shown
        if len(shown) < len(members):
            rows.append((f"... and {len(members) - len(shown)} more {key} values (--tags {key} --all)", None))
    return rows


def _read_tag_schema(path: str | None) -> dict[str, Any] | None:
    from verifily_core.datasets.rows import tag_schema_problem
    from verifily_core.errors import DataError

    if not path:
        return None
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: not JSON or not UTF-8
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(";")[0]
        raise DataError(f"{path}: unreadable tag schema ({reason})") from None
    problem = tag_schema_problem(doc)
    if problem:
        raise DataError(f"{path}: {problem}; a tag schema maps tag keys to {{\"type\": ...}} objects, "
                        'e.g. {"source": {"type": "categorical", "values": ["human", "synthetic"]}}')
    return doc


@click.group()
def dataset() -> None:
    """Create, inspect, verify and diff dataset versions (id@version) in the local store."""


@dataset.command()
@click.option("--id", "dataset_id", required=True, help="Dataset id, e.g. ds_demo.")
@click.option("--version", "version", required=True, help="Version name, e.g. v2 (immutable once created).")
@click.option("--task", help="Task whose row schema every row must follow (a task of `verifily plugins`); "
              "default: the task of --from-dir's manifest.json.")
@click.option("--train", type=click.Path(dir_okay=False), help="Training split: JSONL, CSV, TSV, Parquet or a JSON array.")
@click.option("--val", type=click.Path(dir_okay=False), help="Validation split (as --train).")
@click.option("--test", type=click.Path(dir_okay=False), help="Test split (as --train).")
@click.option("--map", "column_map", metavar="FIELD=COLUMN,...",
              help="Where each row field comes from, e.g. text=review,label=sentiment,tags.source=origin.")
@click.option("--from-dir", type=click.Path(file_okay=False),
              help="Take the splits from this folder: its manifest.json (verified first) or train/val/test.jsonl.")
@click.option("--tag-schema", type=click.Path(dir_okay=False),
              help="JSON file with the tag schema to enforce (default: inferred from the rows).")
@click.option("--val-fraction", type=float, metavar="F",
              help="Make the val split from this share of the train rows (when the input has none).")
@click.option("--test-fraction", type=float, metavar="F",
              help="Make the test split from this share of the train rows (when the input has none).")
@click.option("--stratify", metavar="KEY,...",
              help="Keep these proportions in every made split: row fields or tags (e.g. label,tags.source).")
@click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of the made splits.")
@store_option
@click.pass_obj
def create(state: GlobalState, dataset_id: str, version: str, task: str | None, train: str | None, val: str | None,
           test: str | None, column_map: str | None, from_dir: str | None, tag_schema: str | None, store: str | None,
           val_fraction: float | None, test_fraction: float | None, stratify: str | None, split_seed: int) -> None:
    """Validate rows, copy the files into the store and seal a new version."""
    from verifily_core.api import create_dataset
    from verifily_core.datasets.tabular import parse_mapping

    paths = {s: p for s, p in (("train", train), ("val", val), ("test", test)) if p}
    fractions = {s: f for s, f in (("val", val_fraction), ("test", test_fraction)) if f is not None}
    plan = None
    if fractions:
        from verifily_core.datasets.splitting import SplitPlan

        keys = tuple(k.strip() for k in (stratify or "").split(",") if k.strip())
        plan = SplitPlan(fractions, keys, split_seed)
    elif stratify:
        raise click.UsageError("--stratify needs --val-fraction or --test-fraction")
    ignored: set[str] = set()
    dv = create_dataset(dataset_id, version, task, paths, from_dir=from_dir, tag_schema=_read_tag_schema(tag_schema),
                        store=store, registries=state.registries, auto_split=plan,
                        column_map=parse_mapping(column_map), ignored_columns=ignored)
    out(f"Created {dv.ref}: {dv.num_rows} rows ({', '.join(f'{f.split} {f.num_rows}' for f in dv.files)})")
    out(f"  Tag keys:     {', '.join(dv.tag_keys) or '(none)'}")
    out(f"  Content hash: {dv.content_hash}")
    out(f"  Location:     {dv.root}")
    if ignored:
        note(f"Columns left out (no field of task '{dv.task}'; --map FIELD=COLUMN or tags.KEY=COLUMN keeps them): "
             + ", ".join(sorted(ignored)))


@dataset.command(name="list")
@store_option
@format_option()
def list_cmd(store: str | None, fmt: str) -> None:
    """List every dataset version in the store (folders that are not versions are reported on stderr)."""
    from verifily_core.api import list_datasets

    versions, problems = list_datasets(store)
    for problem in problems:
        click.echo(f"Warning: {problem}", err=True)
    if fmt == "json":
        out(json.dumps([{"ref": v.ref, "task": v.task, "num_rows": v.num_rows, "created_at": v.created_at,
                         "content_hash": v.content_hash} for v in versions], indent=2))
        return
    if not versions:
        out("No dataset versions in the store.")
    for v in versions:
        out(f"{v.ref:<28} {v.task:<15} {v.num_rows:>8} rows  {v.created_at}")


@dataset.command()
@click.argument("ref")
@store_option
@tag_options
@format_option()
def show(ref: str, store: str | None, tags: str | None, all_values: bool, fmt: str) -> None:
    """Rows per split and per tag value of one version (the largest values of each tag key)."""
    from verifily_core.api import show_dataset
    from verifily_core.slices import slice_keys

    dv, counts = show_dataset(ref, store)
    keys = _tag_keys(tags, {slice_keys(label)[0] for c in counts.values() for label in c})
    if keys is not None:
        counts = {s: {k: n for k, n in c.items() if slice_keys(k)[0] in keys} for s, c in counts.items()}
    if fmt == "json":
        out(json.dumps({**dv.to_manifest(), "rows_by_tag": counts}, indent=2))
        return
    out(style(f"{dv.ref}", bold=True) + f"  task {dv.task}, created {dv.created_at}")
    out(f"  Content hash: {dv.content_hash}")
    for f in dv.files:
        out(f"  {f.split:<6} {f.num_rows:>7} rows  {f.path}")
        for label, n in _by_key(counts[f.split], lambda v: v, all_values):
            out(f"           {label:<32} {n:>7}" if n is not None else f"           {label}")


@dataset.command(name="verify")
@click.argument("ref")
@click.option("--rows", is_flag=True, help="Also re-validate every row against the task and tag schema.")
@store_option
@click.pass_obj
def verify_cmd(state: GlobalState, ref: str, rows: bool, store: str | None) -> None:
    """Recompute every file hash of a version; exit 2 on any mismatch."""
    from verifily_core.api import verify_dataset

    dv = verify_dataset(ref, rows=rows, store=store, registries=state.registries if rows else None)
    checked = f"{len(dv.files)} file(s)" + (f", {dv.num_rows} rows" if rows else "")
    out(f"{dv.ref}: OK ({checked}, content hash {dv.content_hash})")


@dataset.command()
@click.argument("ref_a")
@click.argument("ref_b")
@store_option
@tag_options
@format_option()
@click.pass_obj
def diff(state: GlobalState, ref_a: str, ref_b: str, store: str | None, tags: str | None, all_values: bool,
         fmt: str) -> None:
    """Rows added, removed, changed and retagged from REF_A to REF_B, per split and tag value
    (the most changed values of each tag key)."""
    from verifily_core.api import diff_datasets
    from verifily_core.slices import slice_keys

    result = diff_datasets(ref_a, ref_b, store=store, registries=state.registries)
    keys = _tag_keys(tags, {slice_keys(label)[0] for c in result["by_tag"].values() for label in c})
    if keys is not None:
        result["by_tag"] = {s: {k: t for k, t in c.items() if slice_keys(k)[0] in keys}
                            for s, c in result["by_tag"].items()}
    if fmt == "json":
        out(json.dumps(result, indent=2))
        return
    out(style(f"{result['from']} -> {result['to']}", bold=True))
    for split, c in result["splits"].items():
        out(f"  {split:<6} {_counts(c, zeros=True)}")
        changed = {label: t for label, t in result["by_tag"][split].items() if any(t.values())}
        for label, t in _by_key(changed, lambda t: sum(t.values()), all_values):
            out(f"           {label:<32} {_counts(t)}" if t is not None else f"           {label}")


_SIGNS = {"added": "+", "removed": "-", "changed": "~", "retagged": ""}


def _counts(counts: dict[str, int], zeros: bool = False) -> str:
    parts = [f"{_SIGNS[k]}{n} {k}" for k, n in counts.items() if n or zeros]
    return ", ".join(parts) or "unchanged"
