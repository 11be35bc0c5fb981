"""Network weights in a model directory, for every family: safetensors bytes to write, and the checks that
turn a damaged file (unreadable, missing keys, NaN or infinite values) into one line saying "retrain it"."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save

from engine.errors import ModelDamagedError

# What reading a damaged model directory raises: a bad model.json field (KeyError, TypeError, ValueError,
# AttributeError), truncated or foreign weights (SafetensorError, RuntimeError from load_state_dict), I/O.
DAMAGE = (OSError, RuntimeError, KeyError, TypeError, ValueError, AttributeError, SafetensorError)


def tensor_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    return save({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()})


def check_finite(tensors: dict[str, torch.Tensor], what: str) -> None:
    """Damaged weights (NaN or infinite values) would give black results without an error."""
    bad = {name: int((~torch.isfinite(t)).sum()) for name, t in tensors.items() if t.is_floating_point()}
    bad = {name: n for name, n in bad.items() if n}
    if bad:
        total = sum(tensor.numel() for tensor in tensors.values())
        raise ValueError(f"{what} has {sum(bad.values())} non-finite values of {total}, in {next(iter(bad))}")


def damaged(directory: Path, what: str, error: Exception) -> ModelDamagedError:
    # load_state_dict lists every missing and unexpected key: keep the first line, the error stays one line.
    reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    return ModelDamagedError(f"model {directory} is damaged ({what}: {reason}); retrain it")
