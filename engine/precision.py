"""Training precision, for every family: fp32, or bf16 autocast where the hardware runs it natively."""

import enum


class Precision(str, enum.Enum):
    """Training precision. There is no fp16: WGAN-GP's gradient penalty is unstable in it, and GPUs without
    bf16 (before NVIDIA Ampere) train in fp32."""

    FP32 = "fp32"
    BF16 = "bf16"  # autocast to bfloat16 (CPU with AVX-512 BF16 / AMX, or CUDA)
