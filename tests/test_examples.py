"""The examples run end to end (in their --smoke modes), offline.

Each run is a separate interpreter, as a user would start it. Most of a run is
importing TensorFlow, so the runs start together in a small thread pool and
the tests only read their results.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

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


@pytest.mark.parametrize("name", ["transfer_help", "classify_help"])
def test_examples_have_help(results, name):
    out = _ok(results[name])
    assert out.startswith("usage:")
    assert "--smoke" in out
