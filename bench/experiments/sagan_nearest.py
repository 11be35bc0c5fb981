"""Are a set generator's broken samples nearest the few subjects of the face set that are not faces
(cats, monkeys, people, hands, the robot, clothes: bench/emoji.py's NOT_ROUND)?

    python -m bench.experiments.sagan_nearest --model runs/s22/w64/model --out runs/nearest

For a stored set-generator model trained on the benchmark's 128 face code points (`python -m bench sagan`
with its default `--emoji faces`; a model does not record its set, so this is not checked), draws the
benchmark's 64 fixed samples and finds each one's nearest training emoji (the RMSE over mid grey, mirror
images included, as the benchmark's memorisation does). Prints the 8 x 8 map of the sheet (X: the nearest
is not a round face), the count against the share of such emoji in the training set (chance), which of
them they are nearest, and writes the sheet over white with a red frame around each X
(--out/nearest.jpg), to set beside one's own count of broken samples.
"""

from __future__ import annotations

import unicodedata
from collections import Counter

import cv2
import numpy as np

from bench.bench_sagan import distances, fixed_latents, model_experiment, over_grey, read_rgba, split_set
from bench.emoji import NOT_ROUND
from bench.sheet import write_strips
from engine import families
from engine.families.sagan.sample import generate, to_picture
from engine.imageio import to_array

COLUMNS = 8


def main() -> None:
    args = model_experiment(__doc__, "runs/nearest")
    _, trained, _ = split_set(args.out / "set", "faces")
    codes = [int(p.stem[1:], 16) for p in trained]
    loaded = families.load(args.model, "cpu", "onnxruntime")
    pictures = [to_picture(x) for x in generate(loaded.runner, fixed_latents(loaded.model["config"].z_dim))]
    samples = [over_grey(to_array(p, "RGBA")) for p in pictures]
    index = distances(samples, [over_grey(read_rgba(p)) for p in trained]).argmin(axis=1) % len(trained)
    other = [codes[i] in NOT_ROUND for i in index]
    for row in range(0, len(other), COLUMNS):
        print("".join("X" if x else "." for x in other[row : row + COLUMNS]))
    share = sum(c in NOT_ROUND for c in codes) / len(codes)
    print(
        f"{sum(other)} of {len(other)} samples are nearest a training emoji that is not a round face "
        f"({share:.0%} of the training emoji are not)"
    )
    names = Counter(unicodedata.name(chr(codes[i])).lower() for i in index if codes[i] in NOT_ROUND)
    print("nearest: " + ", ".join(f"{name} {count}" for name, count in names.most_common()))
    tiles = []
    for picture, x in zip(pictures, other, strict=True):
        rgba = to_array(picture, "RGBA").astype(np.float32) / 255
        tile = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])
        tile = cv2.copyMakeBorder(tile, 3, 3, 3, 3, cv2.BORDER_CONSTANT, value=(1, 0, 0) if x else (1, 1, 1))
        tiles.append(tile)
    rows = [np.hstack(tiles[i : i + COLUMNS]) for i in range(0, len(tiles), COLUMNS)]
    write_strips(str(args.out / "nearest.jpg"), rows)  # 4 px of white between the rows


if __name__ == "__main__":
    main()
