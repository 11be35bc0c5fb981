"""Source that makes packages unimportable in a test's subprocess, for code that must run without them."""

from __future__ import annotations

# What an editor's Python lacks: the plugins and editor_bridge must load without any of these.
EDITOR_BLOCKED = ("torch", "engine", "torchvision", "cv2", "onnxruntime")


def blocker_source(*packages: str) -> str:
    """Python source that, run first in a process, makes importing any of `packages` raise ImportError."""
    return f"""
import importlib.abc, sys

class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {set(packages)!r}:
            raise ImportError(f"blocked: {{name}}")
        return None

sys.meta_path.insert(0, _Block())
"""
