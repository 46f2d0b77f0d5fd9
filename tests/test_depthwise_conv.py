"""DepthwiseConv3d: nn.Conv3d's forward and parameters, and a backward that equals PyTorch's (FFT and native paths)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from nnunetv2_flare.networks import FlareOrganNet
from nnunetv2_flare.networks.building_blocks.depthwise_conv import FFT_MIN_KERNEL, DepthwiseConv3d

torch.set_num_threads(2)


def plain_copy(conv: DepthwiseConv3d) -> nn.Conv3d:
    plain = nn.Conv3d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding,
                      groups=conv.groups, bias=conv.bias is not None)
    plain.load_state_dict(conv.state_dict())
    return plain


def gradients(conv: nn.Conv3d, x: torch.Tensor, grad_out: torch.Tensor) -> list[torch.Tensor]:
    x = x.detach().requires_grad_(True)
    params = [conv.weight] + ([conv.bias] if conv.bias is not None else [])
    return list(torch.autograd.grad(conv(x), [x] + params, grad_out))


# kernels on both weight-gradient paths (FFT from FFT_MIN_KERNEL up), anisotropic ones as in the LACB
@pytest.mark.parametrize("kernel", [3, 5, 7, (1, 3, 3), (3, 5, 7)])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_gradients_equal_pytorchs(kernel, channels_last, bias):
    torch.manual_seed(0)
    conv = DepthwiseConv3d(6, kernel, bias=bias)
    x = torch.randn(2, 6, 9, 10, 11)
    if channels_last:  # how the SAM and the feed-forward hand their tensors over (a permuted view)
        x = x.permute(0, 2, 3, 4, 1).contiguous().permute(0, 4, 1, 2, 3)
    grad_out = torch.randn(2, 6, 9, 10, 11)
    ours, theirs = gradients(conv, x, grad_out), gradients(plain_copy(conv), x, grad_out)
    assert len(ours) == len(theirs) == (3 if bias else 2)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


def test_gradcheck_in_double_precision_on_both_weight_paths():
    torch.manual_seed(0)
    for kernel in (3, FFT_MIN_KERNEL):
        conv = DepthwiseConv3d(2, kernel).double()
        x = torch.randn(1, 2, 6, 5, 7, dtype=torch.double, requires_grad=True)
        assert torch.autograd.gradcheck(conv, (x,))


def test_forward_and_parameters_are_nn_conv3ds():
    torch.manual_seed(0)
    conv = DepthwiseConv3d(4, (1, 3, 3))
    assert isinstance(conv, nn.Conv3d) and conv.groups == 4 and conv.padding == (0, 1, 1)
    plain = plain_copy(conv)
    x = torch.randn(1, 4, 5, 6, 7, requires_grad=True)
    assert torch.equal(conv(x), plain(x))
    with torch.no_grad():
        assert torch.equal(conv(x), plain(x))
    # a checkpoint saved with nn.Conv3d loads into DepthwiseConv3d and back
    assert set(conv.state_dict()) == set(plain.state_dict())


def test_half_precision_takes_pytorchs_weight_gradient():
    torch.manual_seed(0)
    conv = DepthwiseConv3d(4, FFT_MIN_KERNEL).bfloat16()
    x = torch.randn(1, 4, 6, 6, 6, dtype=torch.bfloat16)
    grad_out = torch.randn(1, 4, 6, 6, 6, dtype=torch.bfloat16)
    ours, theirs = gradients(conv, x, grad_out), gradients(plain_copy(conv).bfloat16(), x, grad_out)
    assert ours[1].dtype == torch.bfloat16
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.float(), b.float(), rtol=0.05, atol=0.05 * b.abs().max().item())


def test_even_kernels_are_refused():
    with pytest.raises(AssertionError, match="odd kernel"):
        DepthwiseConv3d(4, (2, 3, 3))


def test_the_organ_network_trains_through_it():
    net = FlareOrganNet(1, 3, features_per_stage=[6, 12, 24, 48], head_dim=6, deep_supervision=False)
    depthwise = [m for m in net.modules() if type(m) is DepthwiseConv3d]
    # the SAM's three scales, MSA's local V and the feed-forward's 3^3, the LACBs' in-slice (1, 3, 3)
    assert {m.kernel_size for m in depthwise} == {(3, 3, 3), (5, 5, 5), (7, 7, 7), (1, 3, 3)}
    x = torch.randn(1, 1, 32, 32, 32)
    net(x).sum().backward()
    assert all(m.weight.grad is not None and torch.isfinite(m.weight.grad).all() for m in depthwise)
