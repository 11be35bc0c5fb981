"""Synthetic harmonization cases with a known answer: a real region of a painting is inpainted away and pasted
back recoloured (and, in hard cases, smoothed like a photo), so the original painting is the ground truth."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# ../shared/images relative to the project root, as the images' README says.
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "images" / "harmonization"
PAINTINGS = ("oil_tree", "pen_building", "scream", "watercolor_tree")


@dataclass(frozen=True)
class HarmonizationCase:
    """One case; images are RGB uint8 of one size, the mask is HxW uint8 (255 = pasted region)."""

    name: str
    hard: bool
    background: np.ndarray  # the painting with the region inpainted away: what a model trains on
    composite: np.ndarray  # the background with the recoloured region pasted in: what is harmonized
    mask: np.ndarray
    ground_truth: np.ndarray  # the original painting
    hue_shift: float  # degrees
    saturation_gain: float
    gain: tuple[float, float, float]  # per RGB channel: a colour cast that also shows on grey drawings
    contrast: float
    # LAB cases (make_lab_case): lightness gain and offset, a* gain and offset, b* gain and offset
    lab: tuple[float, float, float, float, float, float] | None = None


def read_rgb(path: Path, max_side: int | None = None) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read {path}")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if max_side is not None and max(image.shape[:2]) > max_side:
        scale = max_side / max(image.shape[:2])
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image


def read_mask(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A JPEG mask thresholded to bool at the given image size."""
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise FileNotFoundError(f"cannot read {path}")
    mask = cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    return mask > 127


def _shift_inside(mask: np.ndarray, rng: np.random.Generator, fraction: float = 0.1) -> np.ndarray:
    """Move the mask by up to `fraction` of the image size, keeping it at least 2 px from the border, so
    that each seed cuts a different piece of painted content with the same realistic object shape."""
    height, width = mask.shape
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    dx = int(np.clip(rng.integers(-fraction * width, fraction * width + 1), 2 - x, width - 2 - x - w))
    dy = int(np.clip(rng.integers(-fraction * height, fraction * height + 1), 2 - y, height - 2 - y - h))
    moved = np.zeros_like(mask)
    moved[y + dy : y + dy + h, x + dx : x + dx + w] = mask[y : y + h, x : x + w]
    return moved


def _recolour(
    image: np.ndarray, hue: float, sat: float, gain: tuple[float, float, float], contrast: float
) -> np.ndarray:
    """A global colour change of a float RGB image: hue rotation, saturation gain, channel gains, contrast."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)  # float input: H in degrees, S and V in [0, 1]
    hsv[..., 0] = np.mod(hsv[..., 0] + hue, 360)
    hsv[..., 1] = np.clip(hsv[..., 1] * sat, 0, 1)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * np.asarray(gain, np.float32)
    mean = rgb.mean(axis=(0, 1), keepdims=True)
    return np.clip(mean + (rgb - mean) * contrast, 0, 1)


def _smooth_like_a_photo(image: np.ndarray) -> np.ndarray:
    """Remove brush strokes but keep larger edges, as a pasted photo has none of the painting's texture."""
    sigma_space = max(2.0, min(image.shape[:2]) / 60)
    out = image
    for _ in range(3):
        out = cv2.bilateralFilter(out, d=-1, sigmaColor=0.3, sigmaSpace=sigma_space)
    return out


def make_case(
    painting: np.ndarray, mask: np.ndarray, seed: int, hard: bool, name: str = "", shift: bool = True
) -> HarmonizationCase:
    """Build one case from an RGB uint8 painting and a bool mask of the same size; deterministic per seed."""
    if painting.shape[:2] != mask.shape[:2] or painting.ndim != 3:
        raise ValueError(f"painting {painting.shape} and mask {mask.shape} must be HxWx3 and HxW")
    rng = np.random.default_rng(seed)
    region = _shift_inside(mask, rng) if shift else mask.copy()
    if not region.any():
        raise ValueError("the mask is empty")
    mask8 = region.astype(np.uint8) * 255
    radius = max(3, min(painting.shape[:2]) // 60)
    background = cv2.inpaint(painting, mask8, radius, cv2.INPAINT_TELEA)

    # Shifts large enough to be obviously wrong but not absurd; sign chosen at random.
    hue = float(rng.uniform(25, 60) * rng.choice([-1, 1]))
    sat, contrast = float(rng.uniform(0.6, 1.5)), float(rng.uniform(0.7, 1.3))
    red, green, blue = (float(g) for g in rng.uniform(0.75, 1.25, size=3))
    pasted = _recolour(painting.astype(np.float32) / 255, hue, sat, (red, green, blue), contrast)
    if hard:
        pasted = _smooth_like_a_photo(pasted)
    pasted8 = np.clip(np.rint(pasted * 255), 0, 255).astype(np.uint8)
    composite = np.where(region[..., None], pasted8, background)
    return HarmonizationCase(
        name=name or f"case{seed}",
        hard=hard,
        background=background,
        composite=composite,
        mask=mask8,
        ground_truth=painting.copy(),
        hue_shift=hue,
        saturation_gain=sat,
        gain=(red, green, blue),
        contrast=contrast,
    )


def load_cases(
    directory: Path = DEFAULT_DIR,
    names: Sequence[str] = PAINTINGS,
    seed: int = 0,
    max_side: int | None = 250,
) -> list[HarmonizationCase]:
    """An easy and a hard case for each painting, its object shape taken from `<name>_naive_mask.jpg`.
    `max_side` resizes the paintings first (None keeps full size)."""
    cases = []
    for i, name in enumerate(names):
        painting = read_rgb(directory / f"{name}.jpg", max_side)
        mask = read_mask(directory / f"{name}_naive_mask.jpg", painting.shape)
        for hard in (False, True):
            case_seed = seed * 1000 + 2 * i + int(hard)
            label = f"{name}_{'hard' if hard else 'easy'}"
            cases.append(make_case(painting, mask, case_seed, hard, name=label))
    return cases


SHARED = DEFAULT_DIR.parent


def shared_paintings(directory: Path = SHARED) -> list[Path]:
    """Every painting and photo of the shared images that is not a paste, an edit or a mask: the
    harmonization backgrounds, the generation images, the editing originals, the animation image."""
    found = []
    for folder in ("harmonization", "generation", "editing", "animation"):
        for path in sorted((directory / folder).iterdir()):
            if path.suffix.lower() in (".jpg", ".png") and not any(
                k in path.stem for k in ("_naive", "_edit")
            ):
                found.append(path)
    return found


def _lab_recolour(painting: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, tuple]:
    """The painting recoloured in CIELAB as iHarmony4's cases are: L* gain and offset about its mean, a* and
    b* gains and offsets; float RGB in [0, 1] and the six parameters."""
    lab = cv2.cvtColor(painting.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)
    sign = lambda: float(rng.choice([-1, 1]))  # noqa: E731
    params = (
        float(rng.uniform(0.7, 1.3)), sign() * float(rng.uniform(6, 20)),
        float(rng.uniform(0.6, 1.4)), sign() * float(rng.uniform(5, 18)),
        float(rng.uniform(0.6, 1.4)), sign() * float(rng.uniform(5, 18)),
    )  # fmt: skip
    light = lab[..., 0]
    lab[..., 0] = np.clip(light.mean() + (light - light.mean()) * params[0] + params[1], 0, 100)
    lab[..., 1] = lab[..., 1] * params[2] + params[3]
    lab[..., 2] = lab[..., 2] * params[4] + params[5]
    return np.clip(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB), 0, 1), params


def _placed(shape: np.ndarray, size: tuple[int, int], rng: np.random.Generator, area: float) -> np.ndarray:
    """An object's mask (bool) scaled to cover about `area` of an image of `size` (h, w), at a random place
    at least 2 px from the border."""
    x, y, w, h = cv2.boundingRect(shape.astype(np.uint8))
    cut = shape[y : y + h, x : x + w].astype(np.uint8) * 255
    scale = np.sqrt(area * size[0] * size[1] / max(1, int(shape.sum())))
    nw, nh = max(4, min(size[1] - 4, round(w * scale))), max(4, min(size[0] - 4, round(h * scale)))
    cut = cv2.resize(cut, (nw, nh), interpolation=cv2.INTER_AREA) > 127
    top, left = int(rng.integers(2, size[0] - nh - 1)), int(rng.integers(2, size[1] - nw - 1))
    mask = np.zeros(size, bool)
    mask[top : top + nh, left : left + nw] = cut
    return mask


def make_lab_case(
    painting: np.ndarray, region: np.ndarray, seed: int, texture: bool, name: str
) -> HarmonizationCase:
    """A region of the painting recoloured in CIELAB (and, `texture`, smoothed like a photo) and pasted
    back into the painting with that region inpainted."""
    rng = np.random.default_rng(seed)
    mask8 = region.astype(np.uint8) * 255
    radius = max(3, min(painting.shape[:2]) // 60)
    background = cv2.inpaint(painting, mask8, radius, cv2.INPAINT_TELEA)
    pasted, params = _lab_recolour(painting, rng)
    if texture:
        pasted = _smooth_like_a_photo(pasted)
    pasted8 = np.clip(np.rint(pasted * 255), 0, 255).astype(np.uint8)
    return HarmonizationCase(
        name=name,
        hard=texture,
        background=background,
        composite=np.where(region[..., None], pasted8, background),
        mask=mask8,
        ground_truth=painting.copy(),
        hue_shift=0.0,
        saturation_gain=1.0,
        gain=(1.0, 1.0, 1.0),
        contrast=params[0],
        lab=params,
    )


def load_lab_cases(
    directory: Path = SHARED, regions: int = 2, seed: int = 0, max_side: int | None = 250
) -> list[HarmonizationCase]:
    """Issue 25's cases: for every shared painting, `regions` regions (the shapes of the shared pasted
    objects, about 8-18% of the picture, at random places), each as a "colour" case (recoloured in CIELAB)
    and a "texture" case (recoloured and smoothed like a photo)."""
    shapes = [
        read_mask(
            directory / "harmonization" / f"{name}_naive_mask.jpg",
            read_rgb(directory / "harmonization" / f"{name}.jpg", max_side).shape,
        )
        for name in PAINTINGS
    ]
    cases = []
    for i, path in enumerate(shared_paintings(directory)):
        painting = read_rgb(path, max_side)
        for r in range(regions):
            rng = np.random.default_rng(seed * 100_000 + 100 * i + r)
            region = _placed(
                shapes[(i + r) % len(shapes)], painting.shape[:2], rng, float(rng.uniform(0.08, 0.18))
            )
            for texture in (False, True):
                label = f"{path.stem}_{r}_{'texture' if texture else 'colour'}"
                case_seed = seed * 100_000 + 1000 + 10 * i + 2 * r + int(texture)
                cases.append(make_lab_case(painting, region, case_seed, texture, label))
    return cases


def contact_sheet(cases: Sequence[HarmonizationCase], row_height: int = 180) -> np.ndarray:
    """One row per case: background, composite, mask, ground truth; labelled. RGB uint8."""
    rows = []
    for case in cases:
        panels = [case.background, case.composite, np.repeat(case.mask[..., None], 3, 2), case.ground_truth]
        width = round(case.mask.shape[1] * row_height / case.mask.shape[0])
        row = np.hstack(
            [
                np.pad(
                    cv2.resize(p, (width, row_height), interpolation=cv2.INTER_AREA), ((0, 0), (0, 4), (0, 0))
                )
                for p in panels
            ]
        )
        label = f"{case.name}  hue {case.hue_shift:+.0f}  sat x{case.saturation_gain:.2f}"
        gains = "/".join(f"{g:.2f}" for g in case.gain)
        label += f"  RGB x{gains}  contrast x{case.contrast:.2f}"
        banner = np.full((22, row.shape[1], 3), 255, np.uint8)
        cv2.putText(banner, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        rows.append(np.vstack([banner, row]))
    width = max(r.shape[1] for r in rows)
    return np.vstack(
        [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write a contact sheet of the synthetic harmonization cases."
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--images", type=Path, default=DEFAULT_DIR, help="folder with the paintings and masks"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-side", type=int, default=250, help="resize paintings first (0: full size)")
    args = parser.parse_args(argv)
    cases = load_cases(args.images, seed=args.seed, max_side=args.max_side or None)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "synthetic_cases.png"
    cv2.imwrite(str(path), cv2.cvtColor(contact_sheet(cases), cv2.COLOR_RGB2BGR))
    print(f"wrote {len(cases)} cases to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
