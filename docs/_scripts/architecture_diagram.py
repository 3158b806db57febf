"""Draws docs/assets/architecture.png from the model definition.

Run from the repository root: `python docs/_scripts/architecture_diagram.py`.
Channels, kernels, strides and SE placement come from `keras_lcnet.model`,
so the picture follows the code instead of being drawn by hand.
"""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

from keras_lcnet.architecture import BLOCKS, stage_channels

OUT = pathlib.Path(__file__).parents[1] / "assets" / "architecture.png"
SCALE, INPUT = 1.0, 224
COLORS = {"input": "#eceff1", "stem": "#c5cae9", "3x3": "#bbdefb", "mixed": "#b2dfdb",
          "se": "#ffe0b2", "head": "#e1bee7", "op": "#f5f5f5"}


def draw_box(ax, x, y, w, h, color, title, lines=()):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.08",
                                fc=color, ec="#455a64", lw=1.1))
    text = [title, *lines]
    top = y + h / 2 + (len(text) - 1) * 0.11
    for i, line in enumerate(text):
        ax.text(x + w / 2, top - i * 0.22, line, ha="center", va="center",
                fontsize=8.5, fontweight="bold" if i == 0 else "normal")


def draw_arrow(ax, x1, y1, x2, y2):
    ax.annotate("", xy=(x2, y2), xytext=(x1, y1),
                arrowprops={"arrowstyle": "-|>", "color": "#455a64", "lw": 1.1})


def stages():
    """(title, lines, color) for the stem and each stage, at SCALE and INPUT."""
    channels, size = stage_channels(SCALE), INPUT // 2
    rows = [("conv1 (stem)", ["3x3 conv, stride 2", f"{channels['conv1']} ch, {size}x{size}"],
             "stem")]
    for stage, blocks in BLOCKS.items():
        size //= blocks[0][3]
        kernels = sorted({f"{b[0]}x{b[0]}" for b in blocks})
        se = any(b[4] for b in blocks)
        n = f"{len(blocks)} block" + ("s" if len(blocks) > 1 else "")
        detail = f"{n}, {'/'.join(kernels)}" + (", SE" if se else "")
        color = "se" if se else ("mixed" if len(kernels) > 1 else "3x3")
        rows.append((stage, [detail, f"{channels[stage]} ch, {size}x{size}"], color))
    return rows


def main() -> None:
    fig, ax = plt.subplots(figsize=(11.5, 3.95))
    ax.set_xlim(0, 11.5)
    ax.set_ylim(0.35, 4.2)
    ax.axis("off")
    ax.text(0.1, 4.0, f"PP-LCNet x1_0 at {INPUT}x{INPUT}", fontsize=11, fontweight="bold",
            va="center")

    # Top row: input, stem and the five stages.
    y, h, w, gap = 2.75, 0.95, 1.5, 0.2
    draw_box(ax, 0.1, y, 1.1, h, COLORS["input"], "input", ["RGB 0..255", "normalize"])
    x = 1.2
    for title, lines, color in stages():
        draw_arrow(ax, x, y + h / 2, x + gap, y + h / 2)
        x += gap
        draw_box(ax, x, y, w, h, COLORS[color], title, lines)
        x += w
    last_center = x - w / 2

    # Head, under the last stage.
    hy, hh = 1.0, 1.4
    draw_arrow(ax, last_center, y, last_center, hy + hh)
    draw_box(ax, x - 2.2, hy, 2.2, hh, COLORS["head"], "head",
             ["global average pool", "1x1 conv to 1280, no bias", "h-swish, dropout 0.2",
              "dense -> classes"])

    # The block every stage repeats.
    ax.text(0.1, 2.3, "each block: depthwise-separable, no residual", fontsize=9,
            fontweight="bold", va="center")
    ops = [("depthwise kxk", "stride 1 or 2"), ("BatchNorm", "h-swish"),
           ("SE", "blocks6 only"), ("pointwise 1x1", "conv"), ("BatchNorm", "h-swish")]
    bx, bw = 0.1, 1.3
    for i, (title, line) in enumerate(ops):
        draw_box(ax, bx, 1.45, bw, 0.6, COLORS["se" if title == "SE" else "op"], title, [line])
        if i < len(ops) - 1:
            draw_arrow(ax, bx + bw, 1.75, bx + bw + 0.2, 1.75)
        bx += bw + 0.2
    notes = [
        "SE: global average pool -> 1x1 conv to c/4, ReLU -> 1x1 conv to c, "
        "hard-sigmoid -> rescale the features",
        "h-swish(x) = x * relu6(x + 3) / 6;  hard-sigmoid(x) = relu6(x + 3) / 6",
        "Other widths scale every channel count (rounded to multiples of 8) "
        "except the head's 1280.",
    ]
    for i, note in enumerate(notes):
        ax.text(0.1, 1.1 - i * 0.3, note, fontsize=8.5, va="center")
    fig.tight_layout(pad=0.2)
    fig.savefig(OUT, dpi=130)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
