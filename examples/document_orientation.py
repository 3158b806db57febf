"""Straighten a folder of scanned pages: predict each page's orientation, turn it upright.

    python examples/document_orientation.py scans/ upright/
    python examples/document_orientation.py scans/ upright/ --min-score 0.9
    python examples/document_orientation.py scans/ upright/ --preset pulc_text_image_orientation
    python examples/document_orientation.py --smoke

Every image in the input folder (jpg, png, bmp, tif, webp) is classified by a
document-orientation preset (`PP-LCNet_x1_0_doc_ori` from PaddleX by default,
or PaddleClas' `pulc_text_image_orientation`) as turned by 0, 90, 180 or 270
degrees. The original file, at full resolution, is turned back upright and
written to the output folder under the same name. A page predicted upright,
or whose score is below `--min-score`, is copied unchanged. One line is
printed per page; files that cannot be read are reported and skipped, and the
exit status is then 1.

Which way the angles count: the labels say how far the page was turned
*clockwise*, so it is turned back counter-clockwise by the same angle (see
`upright`). That is upstream's reading, not something keras-lcnet has checked
against the published weights.

The weights are downloaded once into the Keras cache (`~/.keras/models/`).
Offline, the script stops with the library's message saying where to put
the file.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np
from PIL import Image, ImageDraw, ImageOps

import keras_lcnet

PRESETS = ("PP-LCNet_x1_0_doc_ori", "pulc_text_image_orientation")
ANGLES = ("0", "90", "180", "270")  # the presets' labels
SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
PathLike = str | os.PathLike


def upright(page: Image.Image, label: str) -> Image.Image:
    """Turns a page back upright, given its predicted orientation label.

    The labels count how far the page is turned clockwise. PaddleClas' page
    for `text_image_orientation` (whose label list `PP-LCNet_x1_0_doc_ori`
    shares) builds its data set by turning upright pages clockwise and reads
    label `90` as "text turned 90 degrees clockwise"
    (`docs/zh_CN/models/PULC/PULC_text_image_orientation.md`); PaddleX'
    document pre-processing pipeline undoes label `a` by turning the image
    `a` degrees counter-clockwise (`cv2.getRotationMatrix2D(center, a, 1)`).
    So the page is turned counter-clockwise by the label's angle.

    Args:
        page: The page as read (EXIF orientation already applied).
        label: `"0"`, `"90"`, `"180"` or `"270"`.

    Returns:
        The upright page; a quarter turn swaps width and height.

    Raises:
        ValueError: `label` is not one of those angles.
    """
    if label not in ANGLES:
        raise ValueError(f"Orientation label must be one of {', '.join(ANGLES)}, got {label!r}.")
    # Pillow turns counter-clockwise for positive angles, losslessly for multiples of 90.
    return page.rotate(int(label), expand=True)


def _write_atomically(target: Path, write) -> None:
    """Calls `write(path)` on a temporary file next to `target`, then renames it."""
    part = target.with_name(f".{target.name}.part")
    try:
        write(part)
        os.replace(part, target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _save_upright(source: Path, target: Path, label: str) -> None:
    with Image.open(source) as img:
        fmt = img.format
        dpi = img.info.get("dpi")
        options = {"icc_profile": img.info["icc_profile"]} if "icc_profile" in img.info else {}
        page = upright(ImageOps.exif_transpose(img), label)
    if dpi:  # a quarter turn swaps the horizontal and vertical resolution
        options["dpi"] = tuple(dpi[::-1]) if label in ("90", "270") else tuple(dpi)
    _write_atomically(target, lambda part: page.save(part, format=fmt, quality=95, **options))


def straighten_page(
    model, preset: str, path: Path, target: Path, min_score: float
) -> tuple[str, float, str]:
    """Classifies one page and writes it upright into folder `target`.

    Args:
        model: The preset's model.
        preset: Its preset name.
        path: The page's image file.
        target: Existing output folder; the page keeps its file name.
        min_score: Below this score the page is copied unchanged.

    Returns:
        `(predicted label, its score, label applied)`; `"0"` is applied (the
        file copied unchanged) when the score is below `min_score`.
    """
    x = keras_lcnet.load_image(path, preset=preset)
    [[(label, score)]] = keras_lcnet.decode_outputs(model.predict(x, verbose=0), preset, top=1)
    turn = label if score >= min_score else "0"
    if turn == "0":
        _write_atomically(target / path.name, functools.partial(shutil.copyfile, path))
    else:
        _save_upright(path, target / path.name, turn)
    return label, score, turn


def straighten(
    model, preset: str, source: Path, target: Path, min_score: float
) -> tuple[dict[str, str], int]:
    """Writes every page in folder `source` upright into folder `target`, printing a line each.

    Args:
        model: The preset's model (`keras_lcnet.from_preset(preset)`).
        preset: Its preset name.
        source: Folder of page images (other files are ignored).
        target: Existing output folder.
        min_score: Pages scored below it are copied unchanged.

    Returns:
        `({file name: label applied}, number of files that failed)`.
    """
    applied, failed = {}, 0
    for path in sorted(p for p in source.iterdir() if p.suffix.lower() in SUFFIXES):
        try:
            label, score, turn = straighten_page(model, preset, path, target, min_score)
        except (ValueError, OSError) as e:
            print(f"{path.name}: error: {' '.join(str(e).split())}", file=sys.stderr)
            failed += 1
            continue
        action = "rotated" if turn != "0" else "kept" if label == "0" else "kept (unsure)"
        print(f"{path.name}: {label:>3} deg, score {score:.3f}, {action}")
        applied[path.name] = turn
    print(f"{len(applied)} pages written to {target}, {failed} failed")
    return applied, failed


def _make_smoke_pages(folder: Path) -> None:
    """Writes a text-like page turned clockwise by each label's angle, `page_<angle>.png`."""
    rng = np.random.default_rng(0)
    page = Image.new("RGB", (300, 420), "white")  # portrait, like a sheet of paper
    draw = ImageDraw.Draw(page)
    draw.rectangle((30, 30, 190, 48), fill="black")  # a heading at the top left
    for y in range(80, 390, 14):  # left-aligned lines of text
        draw.rectangle((30, y, 30 + int(rng.integers(100, 240)), y + 6), fill=(70, 70, 70))
    for angle in ANGLES:
        page.rotate(-int(angle), expand=True).save(folder / f"page_{angle}.png")


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


def _check_sizes(source: Path, target: Path, applied: dict[str, str]) -> bool:
    """Whether every page was written, its sides swapped exactly when turned a quarter."""
    ok = len(applied) == len(list(source.iterdir()))
    for name, label in applied.items():
        width, height = _size(source / name)
        expected = (height, width) if label in ("90", "270") else (width, height)
        ok = ok and _size(target / name) == expected
    return ok


def _folders(input_dir: PathLike, output_dir: PathLike) -> tuple[Path, Path]:
    source, target = Path(input_dir), Path(output_dir)
    if not source.is_dir():
        raise ValueError(f"input folder '{source}' does not exist (or is not a folder).")
    if not any(p.suffix.lower() in SUFFIXES for p in source.iterdir()):
        raise ValueError(f"no images ({', '.join(SUFFIXES)}) in '{source}'.")
    if target.resolve() == source.resolve():
        raise ValueError("the output folder must differ from the input folder.")
    return source, target


def run(args: argparse.Namespace, input_dir: PathLike, output_dir: PathLike) -> int:
    """Builds the model and straightens `input_dir` into `output_dir`; returns the exit status."""
    smoke = args.smoke is not None
    try:
        source, target = _folders(input_dir, output_dir)
        model = keras_lcnet.from_preset(args.preset, **({"weights": None} if smoke else {}))
        target.mkdir(parents=True, exist_ok=True)
    except (ValueError, OSError) as e:
        # Offline, the library's WeightsUnavailableError (an OSError) names the URL,
        # the cache path to place the file at and `keras-lcnet convert`.
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    applied, failed = straighten(model, args.preset, source, target, args.min_score)
    if smoke:
        ok = _check_sizes(source, target, applied)
        print(f"smoke check: every page written with the expected size: {'yes' if ok else 'NO'}")
        failed += not ok
    return 1 if failed else 0


def _score(value: str) -> float:
    try:
        score = float(value)
    except ValueError:
        score = float("nan")
    if not 0 <= score <= 1:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, got {value!r}")
    return score


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", nargs="?", help="folder of page images")
    parser.add_argument("output", nargs="?", help="folder for the upright pages (created)")
    parser.add_argument("--preset", default=PRESETS[0], choices=PRESETS,
                        help=f"orientation model (default: {PRESETS[0]})")
    parser.add_argument("--min-score", type=_score, default=0.0,
                        help="copy pages unchanged when the top score is below this (default: 0)")
    parser.add_argument("--smoke", nargs="?", const="", metavar="DIR",
                        help="random weights, generated pages (in DIR/pages, written to "
                        "DIR/upright; default: a temporary folder): checks the pipeline offline")
    args = parser.parse_args()
    if args.smoke is None:
        if args.output is None:
            parser.error("give an input and an output folder, or --smoke")
        return run(args, args.input, args.output)
    keras.utils.set_random_seed(0)  # the same random weights, so the same angles, every run
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.smoke or tmp)
        (root / "pages").mkdir(parents=True, exist_ok=True)
        _make_smoke_pages(root / "pages")
        print("Random weights (--smoke): the angles and scores below are meaningless (an "
              "untrained model scores the four angles about equally), so whether the pages "
              "end up upright is NOT checked; only that each is read, classified and written "
              "with the size its predicted angle implies.")
        return run(args, root / "pages", root / "upright")


if __name__ == "__main__":
    sys.exit(main())
