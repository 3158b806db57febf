"""The examples run end to end (in their --smoke modes), offline.

Each run is a separate interpreter, as a user would start it. Most of a run is
importing TensorFlow, so the runs start together in a small thread pool and
the tests only read their results.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow  # every test reads the results of interpreters started together

ROOT = pathlib.Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
FIXTURE = ROOT / "tests" / "fixtures" / "pplcnet_x0_25.pdparams"  # x0_25, 8 classes
# x0_25, 4 classes, no last_conv in the head
NO_LAST_CONV = ROOT / "tests" / "fixtures" / "pplcnet_x0_25_no_last_conv.pdparams"
# A proxy on a closed local port makes every download fail at once, so the
# offline path is exercised without touching the network.
NO_NETWORK = {
    key: "http://127.0.0.1:9" for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
}


def _runs(tmp: pathlib.Path) -> dict[str, tuple[list[str], dict[str, str]]]:
    keras_home = str(tmp / "keras_home")
    isolated = {"KERAS_HOME": keras_home, **NO_NETWORK}
    return {
        "transfer_smoke": (["transfer_learning.py", "--smoke"], isolated),
        "transfer_finetune": (
            ["transfer_learning.py", "--smoke", "--weights", str(FIXTURE),
             "--freeze-up-to", "blocks4"],
            isolated,
        ),
        "transfer_help": (["transfer_learning.py", "--help"], isolated),
        "classify_smoke": (["classify_image.py", "--smoke"], isolated),
        "classify_file": (
            ["classify_image.py", "--variant", "x0_25", "--weights", str(FIXTURE), "--top", "3"],
            isolated,
        ),
        "classify_no_last_conv": (
            ["classify_image.py", "--weights", str(NO_LAST_CONV), "--top", "2"], isolated
        ),
        "classify_offline": (["classify_image.py", "--variant", "x0_25"], isolated),
        "classify_help": (["classify_image.py", "--help"], isolated),
        "orientation_smoke": (["document_orientation.py", "--smoke", str(tmp / "smoke")], isolated),
        "orientation_offline": (
            ["document_orientation.py", str(EXAMPLES / "images"), str(tmp / "offline_out")],
            isolated,
        ),
        "orientation_no_input": (
            ["document_orientation.py", str(tmp / "no_such_folder"), str(tmp / "no_input_out")],
            isolated,
        ),
        "orientation_help": (["document_orientation.py", "--help"], isolated),
    }


class Results(dict):
    """Completed runs by name; `tmp` is their working folder (KERAS_HOME inside)."""

    tmp: pathlib.Path


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Results:
    tmp = tmp_path_factory.mktemp("examples")

    def run(item):
        name, (argv, env) = item
        return name, subprocess.run(
            [sys.executable, str(EXAMPLES / argv[0]), *argv[1:]],
            cwd=tmp, env={**os.environ, **env}, capture_output=True, text=True, timeout=600,
        )

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        completed = Results(pool.map(run, _runs(tmp).items()))
    completed.tmp = tmp
    return completed


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_transfer_learning_smoke(results):
    lines = _ok(results["transfer_smoke"]).strip().splitlines()
    assert "from scratch" in lines[0]
    assert re.fullmatch(r"val_accuracy=[01]\.\d{4}", lines[-1]), lines[-1]


def test_transfer_learning_fine_tunes_a_checkpoint_with_frozen_stages(results):
    lines = _ok(results["transfer_finetune"]).strip().splitlines()
    total, trainable = (
        int(n.replace(",", "")) for n in re.findall(r"([\d,]+) (?:parameters|trainable)", lines[0])
    )
    assert 0 < trainable < total  # stem and blocks2-4 are frozen, the rest trains
    assert re.fullmatch(r"val_accuracy=[01]\.\d{4}", lines[-1]), lines[-1]


def test_classify_image_smoke(results):
    out = _ok(results["classify_smoke"])
    assert "meaningless" in out  # random weights are said plainly
    assert len(re.findall(r"^\s+\d\. ", out, flags=re.MULTILINE)) == 5


def test_classify_image_with_a_local_checkpoint(results):
    out = _ok(results["classify_file"])
    # The fixture has 8 classes, not ImageNet's: class indices, top 3.
    ranked = re.findall(r"^\s+(\d)\. class (\d) +(\d+\.\d\d)%$", out, flags=re.MULTILINE)
    assert [rank for rank, _, _ in ranked] == ["1", "2", "3"]
    scores = [float(score) for _, _, score in ranked]
    assert scores == sorted(scores, reverse=True)


def test_classify_image_takes_the_head_from_the_checkpoint(results):
    # No --variant, and a head without last_conv: both are read off the file.
    out = _ok(results["classify_no_last_conv"])
    assert "PPLCNet_x0_25" in out
    assert len(re.findall(r"^\s+\d\. class [0-3] ", out, flags=re.MULTILINE)) == 2


def test_classify_image_offline_fails_with_the_library_message(results):
    result = results["classify_offline"]
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: Could not download https://")
    assert "PPLCNet_x0_25_pretrained.pdparams" in message
    assert os.path.join("keras_home", "models", "PPLCNet_x0_25_pretrained.pdparams") in message
    assert "keras-lcnet convert" in message
    assert "Traceback" not in result.stderr
    assert not list((results.tmp / "keras_home").rglob("*.pdparams*"))  # nothing half-written


@pytest.mark.parametrize("name", ["transfer_help", "classify_help", "orientation_help"])
def test_examples_have_help(results, name):
    out = _ok(results[name])
    assert out.startswith("usage:")
    assert "--smoke" in out


# Document orientation. The labels count clockwise quarter turns of the page
# (see `upright` in the example); np.rot90 turns counter-clockwise for k > 0.
ANGLES = ("0", "90", "180", "270")
PAGE_LINE = re.compile(r"^(\S+): +(\d+) deg, score (\d\.\d{3}), (rotated|kept(?: \(unsure\))?)$")


def _example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _turned_clockwise(pixels: np.ndarray, angle: str) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(pixels, k=-(int(angle) // 90)))


def _pixels(path: pathlib.Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def test_document_orientation_smoke_writes_every_page(results):
    out = _ok(results["orientation_smoke"])
    assert "meaningless" in out and "NOT checked" in out  # random weights are said plainly
    printed = {m[1]: m.groups()[1:] for m in map(PAGE_LINE.match, out.splitlines()) if m}
    pages = sorted((results.tmp / "smoke" / "pages").iterdir())
    assert len(pages) == 4 and sorted(printed) == [p.name for p in pages]
    upright = results.tmp / "smoke" / "upright"
    assert sorted(p.name for p in upright.iterdir()) == sorted(printed)  # nothing half-written
    for page in pages:
        angle, _, action = printed[page.name]
        written = upright / page.name
        if action == "rotated":  # turned back counter-clockwise by the printed angle
            assert np.array_equal(_pixels(written), np.rot90(_pixels(page), k=int(angle) // 90))
        else:
            assert written.read_bytes() == page.read_bytes()


def test_document_orientation_offline_fails_with_the_library_message(results):
    result = results["orientation_offline"]
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: Could not download https://")
    name = "PP-LCNet_x1_0_doc_ori_pretrained.pdparams"
    assert os.path.join("keras_home", "models", name) in message
    assert "Traceback" not in result.stderr
    assert not (results.tmp / "offline_out").exists()  # no output folder, no pages
    assert not list((results.tmp / "keras_home").rglob("*.pdparams*"))


def test_document_orientation_missing_input_folder_is_a_one_line_error(results):
    result = results["orientation_no_input"]
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: input folder ") and "no_such_folder" in message
    assert "does not exist" in message
    assert not (results.tmp / "no_input_out").exists()


@pytest.mark.parametrize("angle", ANGLES)
def test_document_orientation_upright_undoes_a_clockwise_turn_of_the_label(angle):
    upright = _example("document_orientation").upright
    page = np.random.default_rng(0).integers(0, 256, (3, 5, 3), dtype=np.uint8)  # asymmetric
    turned = Image.fromarray(_turned_clockwise(page, angle))
    assert np.array_equal(np.asarray(upright(turned, angle)), page)


def test_document_orientation_upright_refuses_other_labels():
    upright = _example("document_orientation").upright
    with pytest.raises(ValueError, match="one of 0, 90, 180, 270"):
        upright(Image.new("RGB", (4, 2)), "45")


class _Oracle:
    """Stands in for the model: predicts `labels` in turn, each with `score`."""

    def __init__(self, labels: list[str], score: float = 1.0):
        self.labels, self.score = list(labels), score

    def predict(self, x, verbose=0):
        probs = np.full((1, 4), (1 - self.score) / 3)
        probs[0, ANGLES.index(self.labels.pop(0))] = self.score
        return probs


def _turned_pages(folder: pathlib.Path) -> np.ndarray:
    """An asymmetric page, written turned clockwise by each angle as page_<angle>.png."""
    folder.mkdir()
    page = np.random.default_rng(1).integers(0, 256, (40, 64, 3), dtype=np.uint8)
    for angle in ANGLES:
        Image.fromarray(_turned_clockwise(page, angle)).save(folder / f"page_{angle}.png")
    return page


def test_document_orientation_straightens_pages_and_skips_bad_files(tmp_path, capsys):
    example = _example("document_orientation")
    page = _turned_pages(tmp_path / "scans")
    (tmp_path / "scans" / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "scans" / "notes.txt").write_text("not a page")
    target = tmp_path / "upright"
    target.mkdir()
    # The right angle for every page, in file-name order.
    oracle = _Oracle(sorted(ANGLES, key=lambda a: f"page_{a}.png"))
    applied, failed = example.straighten(
        oracle, "PP-LCNet_x1_0_doc_ori", tmp_path / "scans", target, min_score=0.0
    )
    assert failed == 1
    assert applied == {f"page_{a}.png": a for a in ANGLES}
    assert sorted(p.name for p in target.iterdir()) == sorted(applied)
    for name in applied:
        assert np.array_equal(_pixels(target / name), page), name
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("broken.jpg: error: ")
    assert out.count(", rotated\n") == 3 and "page_0.png:   0 deg, score 1.000, kept" in out


def test_document_orientation_keeps_pages_below_min_score(tmp_path, capsys):
    example = _example("document_orientation")
    _turned_pages(tmp_path / "scans")
    target = tmp_path / "upright"
    target.mkdir()
    applied, failed = example.straighten(
        _Oracle(["180", "270", "90", "90"], score=0.6),
        "PP-LCNet_x1_0_doc_ori", tmp_path / "scans", target, min_score=0.9,
    )
    assert failed == 0 and set(applied.values()) == {"0"}
    for name in applied:  # copied unchanged
        assert (target / name).read_bytes() == (tmp_path / "scans" / name).read_bytes()
    assert capsys.readouterr().out.count("kept (unsure)") == 4
