"""Small icon sets for the set generator's tests and benchmark, from the emoji font Debian packages
(`fonts-noto-color-emoji`, installed by plugins/ci/setup-editors.sh): every emoji in it is a 136 x 128 PNG
in the font's CBDT table, read with fontTools. The issue's face emoji (U+1F600-1F64F, U+1F910-1F92F,
U+1F970-1F97F) are 128 drawings in one hand, but 36 of them are not faces, or not round ones: 9 cats, 8
people and 3 monkeys, 8 hands, the robot, a face palm, the ninja and 5 pieces of clothing (in this font
version, Debian 12's). ROUND_FACES are the other 92: faces, nearer one subject as a set of icons in one
style would be (some still have hands, hats or horns). Nothing is downloaded.
"""

from __future__ import annotations

import io
from pathlib import Path

FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
FACES = (*range(0x1F600, 0x1F650), *range(0x1F910, 0x1F930), *range(0x1F970, 0x1F980))
NOT_ROUND = (
    *range(0x1F638, 0x1F641),  # cats
    *range(0x1F645, 0x1F650),  # people gesturing, the three monkeys
    0x1F916,  # robot
    *range(0x1F918, 0x1F920),  # hands
    0x1F926,  # face palm (a person)
    0x1F977,  # ninja
    *range(0x1F97B, 0x1F980),  # sari, lab coat, goggles, hiking boot, flat shoe
)
ROUND_FACES = tuple(c for c in FACES if c not in NOT_ROUND)
SETS = {"faces": FACES, "round": ROUND_FACES}  # the benchmark's --emoji
INSTALL = "apt-get install fonts-noto-color-emoji (plugins/ci/setup-editors.sh does)"


def available() -> bool:
    try:
        import fontTools  # noqa: F401
    except ImportError:
        return False
    return FONT.is_file()


def face_emoji(out_dir: Path, codepoints: tuple[int, ...] = FACES) -> list[Path]:
    """Write the font's PNG of each code point (those it has) as out_dir/u1F600.png ...; returns them."""
    from fontTools.ttLib import TTFont
    from PIL import Image

    if not FONT.is_file():
        raise FileNotFoundError(f"no emoji font at {FONT}: {INSTALL}")
    font = TTFont(str(FONT), lazy=True)
    cmap = font.getBestCmap()
    strike = font["CBDT"].strikeData[0]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for code in codepoints:
        if code not in cmap or cmap[code] not in strike:
            continue
        image = Image.open(io.BytesIO(strike[cmap[code]].imageData)).convert("RGBA")
        path = out_dir / f"u{code:X}.png"
        image.save(path)
        written.append(path)
    return written
