"""Where the bundled editor plugins and examples are: inside the installed package (a wheel carries them as
engine/_assets/), else the checkout's top-level folders (an editable install or a clone)."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def asset_dir(name: str) -> Path:
    """The folder `name` ("plugins" or "examples") of this installation."""
    packaged = _PACKAGE / "_assets" / name
    return packaged if packaged.is_dir() else _PACKAGE.parent / name
