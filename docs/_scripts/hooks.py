"""MkDocs hooks: publish the benchmark's own output instead of copies of it.

`benchmarks/latency.py` writes `benchmarks/results.md` and
`benchmarks/latency_vs_top1.png`. At build time the Benchmarks page embeds
both, and the model zoo's latency table is built from the results table, so
the docs never quote numbers the last benchmark run did not produce. The
other benchmarks' reports are embedded the same way wherever a page has
`<!-- benchmark-file: NAME.md -->` (`benchmarks/NAME.md`). Without a
benchmark run the pages say so and still build.
"""

from __future__ import annotations

import pathlib
import re

from mkdocs.structure.files import File

ROOT = pathlib.Path(__file__).parents[2]
RESULTS = ROOT / "benchmarks" / "results.md"
PLOT = ROOT / "benchmarks" / "latency_vs_top1.png"
PLOT_URL = "assets/latency_vs_top1.png"
MARKER = "<!-- measured-latency -->"
RESULTS_MARKER = "<!-- benchmark-results -->"
FILE_MARKER = re.compile(r"<!-- benchmark-file: ([\w.-]+\.md) -->")
# The script that writes each report, where its name is not the report's.
WRITERS = {"results.md": "latency.py", "throughput.md": "folder_throughput.py"}
# Columns of the results table shown in the model zoo, as the benchmark names them.
COLUMNS = ("LiteRT fp32 1T", "LiteRT fp32 2T", "LiteRT int8 2T", "ORT fp32 2T")


def on_files(files, config):
    if PLOT.exists():
        files.append(File.generated(config, PLOT_URL, abs_src_path=str(PLOT)))
    return files


def _results_table(text: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the first table whose header starts with `model`."""
    lines = [line.strip() for line in text.splitlines()]
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("|") and cells[0] == "model":
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in row.strip("|").split("|")])
            return cells, rows
    raise ValueError(f"{RESULTS}: no table with a 'model' column")


def measured_latency_table() -> str:
    """Median latency per PP-LCNet width from benchmarks/results.md, as Markdown."""
    if not RESULTS.exists():
        return "No benchmark has been run in this checkout yet (`python benchmarks/latency.py`)."
    text = RESULTS.read_text(encoding="utf-8")
    header, rows = _results_table(text)
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{RESULTS}: columns {missing} not found in {header}")
    index = [header.index(c) for c in COLUMNS]
    machine = re.search(r"^Measured by .*? on ([\d-]+): ([^,]+, \d+ logical cores)", text, re.M)
    out = [
        "| Model | " + " | ".join(COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for row in rows:
        if row[0].startswith("PPLCNet_"):
            medians = [row[i].split(" ")[0] for i in index]  # "1.93 (2.18)": median (p90)
            out.append(f"| `{row[0]}` | " + " | ".join(medians) + " |")
    where = f" on {machine[2]} ({machine[1]})" if machine else ""
    out += [
        "",
        f"Median milliseconds per image (batch 1, 224x224) measured{where} by "
        "`benchmarks/latency.py`; 1T/2T = CPU threads, LiteRT with XNNPACK, ORT = "
        "onnxruntime. Method, p90 and the MobileNet baselines: [Benchmarks](benchmarks.md).",
    ]
    return "\n".join(out)


def benchmark_file(name: str) -> str:
    """benchmarks/`name` one heading level down, or what writes it when it is absent."""
    path = ROOT / "benchmarks" / name
    if not path.exists():
        script = WRITERS.get(name, name.removesuffix(".md") + ".py")
        return (f"No benchmark has written `benchmarks/{name}` in this checkout yet: "
                f"`python benchmarks/{script}` does.")
    text = path.read_text(encoding="utf-8")
    return re.sub(r"^(#{1,5}) ", r"#\1 ", text, flags=re.MULTILINE)  # under the page's title


def benchmark_results() -> str:
    """benchmarks/results.md one heading level down, then the plot."""
    text = benchmark_file(RESULTS.name)
    if PLOT.exists():
        text += (
            "\n\n## Latency against accuracy\n\n"
            f"![Published ImageNet top-1 against measured median latency]({PLOT_URL})\n"
        )
    return text


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, measured_latency_table())
    if RESULTS_MARKER in markdown:
        markdown = markdown.replace(RESULTS_MARKER, benchmark_results())
    return FILE_MARKER.sub(lambda match: benchmark_file(match[1]), markdown)
