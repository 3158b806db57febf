"""Generate the transformers processor-path fixture: an image through PPLCNetImageProcessor + torch.

transformers' `PPLCNetImageProcessor` (the input contract of PaddlePaddle's
`*_safetensors` repos) needs torchvision, which does not load beside the project's
pinned CPU torch, so this runs in a throwaway virtualenv where torch and torchvision
come as a matching pair (see the developers' guide), with the project's transformers::

    python3.11 -m venv /tmp/timm-venv
    /tmp/timm-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 transformers==5.24.0
    /tmp/timm-venv/bin/python tools/make_processor_fixture.py

It saves a randomized, BN-calibrated `PPLCNetForImageClassification` of width 0.25 with
7 labels, a 256-channel head conv and the processor's defaults into `tests/fixtures/hf_processor/`
(`save_pretrained` of both), and in `expected.npz` the logits that the slow and the fast
processor + torch give for the image `IMAGE_BOX` crops out of
`tests/fixtures/channel_order.png`. Its short side is the processor's 256, so neither
pipeline resamples: what the test compares is the crop, the normalization and the
RGB -> BGR flip, which is the point.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_fixtures import calibrate_batchnorm  # a sibling script

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
FOLDER = FIXTURES / "hf_processor"
IMAGE_BOX = (40, 20, 360, 276)  # PIL (left, upper, right, lower): 320 x 256, short side 256
SEED = 7


def randomized_model() -> torch.nn.Module:
    """He-scaled kernels, spread BN parameters, BN statistics calibrated on random batches."""
    config = transformers.PPLCNetConfig(
        scale=0.25,
        class_expand=256,  # not 1280: a quarter of the file, and a non-default head to map
        id2label={i: f"class_{i}" for i in range(7)},
        hidden_dropout_prob=0.3,
    )
    model = transformers.PPLCNetForImageClassification(config)
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim > 1:
                scale = (2 / param[0].numel()) ** 0.5
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
            elif "normalization.weight" in name:
                param.copy_(torch.rand(param.shape, generator=generator) + 0.5)
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    calibrate_batchnorm(model, generator, batches=3, shape=(4, 3, 96, 96))
    return model


def main() -> None:
    model = randomized_model()
    image = Image.open(FIXTURES / "channel_order.png").convert("RGB").crop(IMAGE_BOX)
    logits = {}
    for kind in ("PPLCNetImageProcessor", "PPLCNetImageProcessorFast"):
        processor = getattr(transformers, kind)()
        pixels = processor(images=image, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            # transformers 5.24 returns the classifier's logits as `last_hidden_state`.
            logits[kind] = model(pixels).last_hidden_state.numpy()
    slow, fast = logits.values()
    assert np.abs(slow - fast).max() <= 1e-5 * np.abs(slow).max(), "the processors disagree"
    assert np.ptp(slow) > 1.0, "the logits barely depend on the input: BN not calibrated"
    shutil.rmtree(FOLDER, ignore_errors=True)
    model.save_pretrained(FOLDER)
    transformers.PPLCNetImageProcessor().save_pretrained(FOLDER)
    np.savez(
        FOLDER / "expected.npz",
        logits=slow,
        image_box=np.array(IMAGE_BOX),
        versions=np.array(f"transformers {transformers.__version__}, torch {torch.__version__}"),
    )
    print(f"wrote {FOLDER}: logits {np.round(slow, 3)}")


if __name__ == "__main__":
    main()
