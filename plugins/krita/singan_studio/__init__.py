"""SinGAN Studio for Krita: Tools > Scripts > SinGAN Studio > Harmonize selection, Edit selection, Generate
variation, and Retrain and harmonize (or edit) selection.

The installer puts `editor_bridge` and its wheels in `vendor/` beside this file; they go first on sys.path so
the plugin never depends on what else Krita's Python happens to have.
"""

import sys
from pathlib import Path

_VENDOR = Path(__file__).resolve().parent / "vendor"
if _VENDOR.is_dir() and str(_VENDOR) not in sys.path:
    sys.path.insert(0, str(_VENDOR))

from krita import Krita  # noqa: E402

from .extension import SinganExtension  # noqa: E402

Krita.instance().addExtension(SinganExtension(Krita.instance()))
