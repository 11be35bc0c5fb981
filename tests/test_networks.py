"""Generator and critic shapes at arbitrary sizes, and the fast bicubic resize."""

import pytest
import torch
import torch.nn.functional as F

from engine.families.consingan.config import preset
from engine.families.consingan.networks import Discriminator, Generator, upsample


@pytest.mark.parametrize("channels_last", [False, True])
def test_matmul_upsample_equals_bicubic_interpolation(channels_last):
    x = torch.randn(2, 5, 13, 17)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = F.interpolate(x, size=(29, 41), mode="bicubic", align_corners=True)
    got = upsample(x, (29, 41))
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=0)
    torch.testing.assert_close(upsample(x, (29, 41), matmul=False), expected)


@pytest.mark.parametrize("mode", ["generation", "retarget", "harmonization", "editing"])
@pytest.mark.parametrize("size", [(30, 40), (57, 23), (100, 160)])
def test_generator_output_has_the_requested_size(mode, size):
    model, _ = preset("tiny", mode)
    g = Generator(model)
    g.grow()
    g.grow()
    h, w = size
    shapes = [(max(8, h // 3), max(8, w // 3)), (h // 2, w // 2), (h, w)]
    inputs = [torch.randn(1, *g.noise_shape(k, *s)) for k, s in enumerate(shapes)]
    out = g(inputs, [1.0, 0.1, 0.1])
    assert out.shape == (1, 3, h, w)
    assert out.abs().max() <= 1.0
    assert Discriminator(model)(out).shape == (1, 1, h - 10, w - 10)


def test_grown_stage_starts_as_a_copy_of_the_previous_one():
    model, _ = preset("tiny", "generation")
    g = Generator(model)
    g.grow()
    for a, b in zip(g.body[0].parameters(), g.body[1].parameters(), strict=True):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()


def test_stage_outputs_depend_on_noise_amplitude():
    model, _ = preset("tiny", "retarget")
    g = Generator(model)
    g.grow()
    inputs = [torch.randn(1, 3, 12, 12), torch.randn(1, model.nfc, 20, 20)]
    with torch.no_grad():
        assert not torch.equal(g(inputs, [1.0, 0.0]), g(inputs, [1.0, 1.0]))


def test_channels_last_instance_norm_matches_the_fused_op():
    from engine.families.consingan.networks import InstanceNorm

    norm = InstanceNorm(6, affine=True)
    torch.nn.init.normal_(norm.weight, 1.0, 0.3)
    torch.nn.init.normal_(norm.bias, 0.0, 0.3)
    x = torch.randn(2, 6, 11, 13) * 3 + 1
    expected = torch.nn.functional.instance_norm(x, weight=norm.weight, bias=norm.bias, eps=norm.eps)
    torch.testing.assert_close(norm(x), expected)
    torch.testing.assert_close(
        norm(x.contiguous(memory_format=torch.channels_last)), expected, atol=1e-5, rtol=0
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = norm(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, atol=0.1, rtol=0.02)
