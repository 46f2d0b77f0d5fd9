"""The two networks: paper parameter counts, compute, shapes, gradients, determinism, nnU-Net construction."""
from __future__ import annotations

import pytest
import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from nnunetv2_flare.networks import FlareLocator, FlareOrganNet

torch.set_num_threads(2)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def macs(net: torch.nn.Module, size: int) -> float:
    """Multiply-accumulates of one forward pass; the math SDPA backend makes attention countable as matmuls."""
    x = torch.zeros(1, 1, size, size, size)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        net.eval()(x)
    return counter.get_total_flops() / 2


def test_locator_parameter_count_matches_paper():
    net = FlareLocator(1, 2)
    assert count(net) - count(net.decoder.ds_heads) == 1_367_618
    assert count(net.decoder.ds_heads) == 2 * (64 * 2 + 2)


def test_organ_net_parameter_count_matches_paper():
    net = FlareOrganNet(1, 14)
    assert count(net) - count(net.decoder.ds_heads) == 9_373_994
    assert count(net.decoder.ds_heads) == (60 + 120 + 240) * 14 + 3 * 14
    # the decoder is tiny by design (~38 k without the deep-supervision heads)
    assert count(net.decoder) - count(net.decoder.ds_heads) == 38_024


def test_locator_compute_about_one_gmac():
    assert macs(FlareLocator(1, 2), 128) == pytest.approx(1.0e9, rel=0.1)


@pytest.mark.slow
def test_organ_net_compute_about_25_gmac():
    net = FlareOrganNet(1, 14)
    total = macs(net, 96)
    # attention alone: QK^T and AV over 12^3 tokens (stage 3, one MSA block) and 6^3 tokens (stage 4, two blocks)
    attention = 2 * 1728 ** 2 * 240 + 2 * 2 * 216 ** 2 * 480
    assert attention == pytest.approx(1.5e9, rel=0.1)
    assert total - attention == pytest.approx(24e9, rel=0.1)
    assert total == pytest.approx(25e9, rel=0.1)


@pytest.mark.parametrize("deep_supervision", [False, True])
def test_locator_shapes(deep_supervision):
    net = FlareLocator(1, 2, deep_supervision=deep_supervision).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 64, 64, 64))
    if deep_supervision:
        assert [tuple(o.shape) for o in out] == [(1, 2, 64, 64, 64), (1, 2, 16, 16, 16), (1, 2, 8, 8, 8),
                                                 (1, 2, 4, 4, 4)]
        assert all(o.dtype == torch.float32 for o in out)
    else:
        assert out.shape == (1, 2, 64, 64, 64) and out.dtype == torch.float32


@pytest.mark.parametrize("deep_supervision", [False, True])
def test_organ_net_shapes(deep_supervision):
    net = FlareOrganNet(1, 14, deep_supervision=deep_supervision).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 32, 48, 32))
    if deep_supervision:
        assert [tuple(o.shape) for o in out] == [(1, 14, 32, 48, 32), (1, 14, 16, 24, 16), (1, 14, 8, 12, 8),
                                                 (1, 14, 4, 6, 4)]
    else:
        assert out.shape == (1, 14, 32, 48, 32) and out.dtype == torch.float32


def test_deep_supervision_scales_match_outputs():
    """nnU-Net derives its loss scales from arch_kwargs['strides']: 1 / cumprod(strides) without the last level."""
    import numpy as np
    for net, size in ((FlareLocator(1, 2, deep_supervision=True), 64),
                      (FlareOrganNet(1, 14, deep_supervision=True), 32)):
        scales = 1 / np.cumprod(np.vstack(net.strides), axis=0)[:-1]
        with torch.no_grad():
            outs = net.eval()(torch.randn(1, 1, size, size, size))
        assert len(outs) == len(scales)
        for o, s in zip(outs, scales):
            assert tuple(o.shape[2:]) == tuple(int(round(size * f)) for f in s)


@pytest.mark.slow
def test_toggling_deep_supervision_keeps_parameters_and_checkpoints_load():
    for cls, nc in ((FlareLocator, 2), (FlareOrganNet, 14)):
        on, off = cls(1, nc, deep_supervision=True), cls(1, nc, deep_supervision=False)
        off.load_state_dict(on.state_dict())  # strict: same parameter set either way
        on.decoder.deep_supervision = False
        x = torch.randn(1, 1, 64, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(on.eval()(x), off.eval()(x))


@pytest.mark.slow
@pytest.mark.parametrize("cls,nc,size", [(FlareLocator, 2, 64), (FlareOrganNet, 14, 32)])
def test_backward_gives_finite_gradients_everywhere(cls, nc, size):
    torch.manual_seed(0)
    net = cls(1, nc, deep_supervision=True)
    net.apply(net.initialize)
    net.train()
    outs = net(torch.randn(2, 1, size, size, size))
    sum(o.float().square().mean() for o in outs).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has non-finite gradients"


@pytest.mark.slow
@pytest.mark.parametrize("cls,nc", [(FlareLocator, 2), (FlareOrganNet, 14)])
def test_eval_mode_is_deterministic(cls, nc):
    net = cls(1, nc).eval()
    x = torch.randn(1, 1, 64, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(x), rtol=0, atol=0)


@pytest.mark.parametrize("cls,divisor", [(FlareLocator, 32), (FlareOrganNet, 16)])
def test_wrong_input_size_names_the_divisor(cls, divisor):
    net = cls(1, 2).eval()
    with pytest.raises(ValueError, match=f"divisible by {divisor}"):
        net(torch.randn(1, 1, divisor + 8, divisor, divisor))


def test_strides_must_describe_the_network():
    with pytest.raises(ValueError, match="strides"):
        FlareOrganNet(1, 14, strides=[[1, 1, 1], [2, 2, 2]])


@pytest.mark.parametrize("dotted,kwargs,nc", [
    ("nnunetv2_flare.networks.FlareLocator", {"features_per_stage": [32, 64, 128, 256], "depths": [2, 2, 2, 2],
                                               "strides": [[1, 1, 1], [4, 4, 4], [2, 2, 2], [2, 2, 2], [2, 2, 2]]}, 2),
    ("nnunetv2_flare.networks.FlareOrganNet", {"features_per_stage": [60, 120, 240, 480], "depths": [2, 2, 2, 2],
                                                "strides": [[1, 1, 1]] + [[2, 2, 2]] * 4}, 14),
])
def test_nnunet_builds_the_networks_from_plans(dotted, kwargs, nc):
    net = get_network_from_plans(dotted, kwargs, [], input_channels=1, output_channels=nc, deep_supervision=True)
    assert type(net).__name__ == dotted.rsplit(".", 1)[1]
    assert net.decoder.deep_supervision is True


def test_narrow_organ_variant_keeps_the_blocks():
    """The narrower variant (same blocks, fewer channels) that CPU demos can plan."""
    net = FlareOrganNet(1, 14, features_per_stage=(24, 48, 96, 192), head_dim=24).eval()
    assert count(net) < 2_000_000
    with torch.no_grad():
        assert net(torch.randn(1, 1, 32, 32, 32)).shape == (1, 14, 32, 32, 32)
