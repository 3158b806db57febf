"""The documentation keeps up with the code.

These tests fail when a CLI flag, a public name or an example is added
without documentation, or when a number in the docs drifts from its source
(the weights registry, the model definition). `make docs` builds the site
itself with `mkdocs build --strict`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import pathlib
import re

import numpy as np
import pytest

import keras_lcnet
from keras_lcnet.architecture import stage_channels
from keras_lcnet.cli import build_parser
from keras_lcnet.presets import PRESETS, VARIANTS

ROOT = pathlib.Path(__file__).parent.parent
DOCS = ROOT / "docs"


def _page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _sections(markdown: str) -> dict[str, str]:
    """Level-2 sections of a page by heading text (backticks dropped)."""
    parts = re.split(r"^## +(.+?) *$", markdown, flags=re.MULTILINE)
    return {title.strip("`"): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def _table_rows(markdown: str, first_cell: str) -> list[list[str]]:
    """Cells of the table rows whose first cell matches the regex `first_cell`."""
    rows = []
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and re.fullmatch(first_cell, cells[0]):
            rows.append(cells)
    return rows


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (subparsers,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(subparsers.choices)


def test_every_cli_subcommand_and_flag_is_documented():
    sections = _sections(_page("cli.md"))
    missing = []
    for command, parser in _subcommands().items():
        if command not in sections:
            missing.append(f"section '## {command}'")
            continue
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            names = [s for s in action.option_strings if s.startswith("--")] or [action.dest]
            missing += [f"{command} {n}" for n in names if f"`{n}`" not in sections[command]]
    assert not missing, f"undocumented in docs/cli.md: {missing}"


def test_cli_page_documents_no_stale_flags():
    commands = _subcommands()
    stale = []
    for command, body in _sections(_page("cli.md")).items():
        if command not in commands:
            continue
        known = {s for a in commands[command]._actions for s in a.option_strings}
        stale += [f"{command} {f}" for f in re.findall(r"`(--[\w-]+)", body) if f not in known]
    assert not stale, f"docs/cli.md documents flags the CLI does not have: {stale}"


def _api_entries() -> list[str]:
    return re.findall(r"^::: +([\w.]+) *$", _page("api.md"), flags=re.MULTILINE)


def test_api_reference_covers_every_public_name():
    entries = set(_api_entries())
    missing = [name for name in keras_lcnet.__all__ if f"keras_lcnet.{name}" not in entries]
    assert not missing, f"add to docs/api.md: {missing}"


@pytest.mark.parametrize("path", _api_entries())
def test_api_reference_entries_resolve(path):
    module, _, attribute = path.rpartition(".")
    try:
        obj = importlib.import_module(path)
    except ImportError:
        obj = getattr(importlib.import_module(module), attribute)
    assert obj is not None


def test_model_zoo_accuracy_matches_the_registry():
    published = {(e.variant, e.tag): e for e in PRESETS}
    rows = _table_rows(_page("models.md"), r"`PPLCNet_x\d_\d+`")
    assert [row[0].strip("`").removeprefix("PPLCNet_") for row in rows] == list(VARIANTS)

    def cell(value):
        return None if value == "\u2013" else float(value)  # an en dash: not published

    for name, _, _, _, top1, top5, ssld1, ssld5 in rows:
        variant = name.strip("`").removeprefix("PPLCNet_")
        entry = published[(variant, "imagenet")]
        assert (cell(top1), cell(top5)) == (entry.top1, entry.top5), variant
        ssld = published.get((variant, "imagenet_ssld"))
        expected = (ssld.top1, ssld.top5) if ssld else (None, None)
        assert (cell(ssld1), cell(ssld5)) == expected, variant


def test_model_zoo_parameters_and_channels_match_the_models():
    rows = _table_rows(_page("models.md"), r"`PPLCNet_x\d_\d+`")
    for name, scale, params, *_ in rows:
        constructor = getattr(keras_lcnet, name.strip("`"))
        model = constructor(weights=None)
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        assert int(params.replace(",", "")) == trainable, name
        assert float(scale) == VARIANTS[name.strip("`").removeprefix("PPLCNet_")]
    channel_rows = _table_rows(_page("models.md"), r"x\d_\d+")
    assert len(channel_rows) == len(VARIANTS)
    for variant, *channels in channel_rows:
        assert [int(c) for c in channels] == list(stage_channels(VARIANTS[variant]).values())


def test_every_example_is_documented_and_every_documented_example_exists():
    usage = _page("usage.md")
    documented = set(re.findall(r"examples/(\w+\.py)", usage))
    present = {p.name for p in (ROOT / "examples").glob("*.py")}
    assert present - documented == set(), "examples missing from docs/usage.md"
    assert documented - present == set(), "docs/usage.md names examples that do not exist"


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "_scripts" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    return hooks


def test_benchmark_file_marker_embeds_the_report(tmp_path, monkeypatch):
    hooks = _hooks()
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "throughput.md").write_text("# Throughput\n\n## Targets\n")
    monkeypatch.setattr(hooks, "ROOT", tmp_path)
    page = ("before\n<!-- benchmark-file: throughput.md -->\n"
            "<!-- benchmark-file: openvino_threading.md -->\nafter")
    out = hooks.on_page_markdown(page, None, None, None)
    assert "## Throughput\n\n### Targets" in out and "<!--" not in out
    assert "`python benchmarks/openvino_threading.py` does" in out
    assert out.startswith("before\n") and out.endswith("\nafter")


def test_model_zoo_latency_is_read_from_the_benchmark_results():
    hooks = _hooks()
    assert hooks.RESULTS.exists(), "benchmarks/results.md is committed with the benchmark run"
    _, rows = hooks._results_table(hooks.RESULTS.read_text(encoding="utf-8"))
    results = {row[0]: row for row in rows}
    table = _table_rows(hooks.measured_latency_table(), r"`PPLCNet_x\d_\d+`")
    assert [row[0].strip("`").removeprefix("PPLCNet_") for row in table] == list(VARIANTS)
    for name, *medians in table:
        published = results[name.strip("`")]
        assert all(any(cell.startswith(m + " ") for cell in published) for m in medians), name
