"""The channels-first inference graph computes what the training network computes."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from nnunetv2_flare.networks import FlareLocator, FlareOrganNet
from nnunetv2_flare.networks.inference_graph import (
    ArgmaxPatchExpand,
    ChannelLayerNorm,
    InstanceNormedConv,
    PatchExpand,
    build_inference_graph,
    fold_batchnorm,
    grouped_as_dense,
    grouped_as_depthwise_and_sum,
    identity_folded,
    interleaved_grouped_as_dense,
    merge_transpose_and_classifier,
)

NARROW = dict(features_per_stage=(12, 24, 48, 96), head_dim=12)


def _randomize_batchnorms(net: nn.Module, seed: int = 0) -> None:
    """Trained-looking BatchNorm statistics, so that folding them is really exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm3d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.2)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)


def test_fold_batchnorm_equals_conv_then_bn() -> None:
    torch.manual_seed(0)
    conv = nn.Conv3d(8, 4, (3, 1, 1), padding=(1, 0, 0), groups=4)
    bn = nn.BatchNorm3d(4).eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    x = torch.randn(1, 8, 5, 6, 7)
    torch.testing.assert_close(fold_batchnorm(conv, bn)(x), bn(conv(x)), rtol=1e-5, atol=1e-5)


def test_merged_transpose_and_classifier_equals_both() -> None:
    torch.manual_seed(0)
    up = nn.ConvTranspose3d(6, 3, 2, stride=2)
    classifier = nn.Conv3d(3, 5, 1)
    x = torch.randn(1, 6, 4, 4, 4)
    torch.testing.assert_close(merge_transpose_and_classifier(up, classifier)(x), classifier(up(x)),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("in_channels, out_channels, groups", [(6, 12, 6), (12, 6, 6), (12, 12, 4)])
def test_grouped_1x1_conv_as_dense(in_channels, out_channels, groups) -> None:
    torch.manual_seed(0)
    conv = nn.Conv3d(in_channels, out_channels, 1, groups=groups)
    x = torch.randn(1, in_channels, 3, 4, 5)
    dense = grouped_as_dense(conv)
    assert dense.groups == 1
    torch.testing.assert_close(dense(x), conv(x), rtol=1e-5, atol=1e-5)


def test_interleaved_grouped_conv_as_dense_on_concatenated_scales() -> None:
    torch.manual_seed(0)
    scales, n = 3, 4
    conv = nn.Conv3d(scales * n, 2 * scales * n, 1, groups=n)
    per_scale = [torch.randn(1, n, 3, 3, 3) for _ in range(scales)]
    interleaved = torch.stack(per_scale, dim=2).flatten(1, 2)  # what the training SAM feeds its grouped conv
    torch.testing.assert_close(interleaved_grouped_as_dense(conv, scales)(torch.cat(per_scale, dim=1)),
                               conv(interleaved), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel, padding", [((3, 1, 1), (1, 0, 0)), ((1, 3, 3), (0, 1, 1))])
def test_grouped_conv_as_depthwise_and_sum(kernel, padding) -> None:
    torch.manual_seed(0)
    conv = nn.Conv3d(12, 6, kernel, padding=padding, groups=6)  # the LACB's slice conv: pairs -> one channel
    x = torch.randn(1, 12, 5, 6, 7)
    split = grouped_as_depthwise_and_sum(conv)
    assert split[0].groups == 12 and split[1].kernel_size == (1, 1, 1)
    torch.testing.assert_close(split(x), conv(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("offset", [0.0, 50.0])
def test_channel_layer_norm_equals_layer_norm_on_channels_last(offset) -> None:
    """Also with a large common offset (a residual stream's mean), where a one-pass E[x^2] - E[x]^2 would cancel."""
    torch.manual_seed(0)
    norm = nn.LayerNorm(12)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 12, 3, 4, 5) * 0.5 + offset
    expected = norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)
    torch.testing.assert_close(ChannelLayerNorm(norm)(x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel", [(2, 2, 2), (1, 2, 2)])
def test_patch_expand_equals_the_transposed_conv(kernel) -> None:
    torch.manual_seed(0)
    up = nn.ConvTranspose3d(6, 5, kernel, stride=kernel)
    x = torch.randn(1, 6, 3, 4, 5)
    expanded = PatchExpand(up)
    assert expanded.conv.kernel_size == (1, 1, 1)
    torch.testing.assert_close(expanded(x), up(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(AssertionError, match="non-overlapping"):
        PatchExpand(nn.ConvTranspose3d(6, 5, 3, stride=2))


@pytest.mark.parametrize("kernel", [(2, 2, 2), (1, 2, 2)])
def test_argmax_patch_expand_equals_the_argmax_of_the_transposed_conv(kernel) -> None:
    torch.manual_seed(0)
    up = nn.ConvTranspose3d(6, 5, kernel, stride=kernel)
    with torch.no_grad():  # integer weights and inputs: exact logits with many exact ties between classes
        up.weight.copy_(torch.randint(-1, 2, up.weight.shape))
        up.bias.zero_()
    x = torch.randint(-1, 2, (2, 6, 3, 4, 5)).float()
    expected = up(x)
    assert (expected.max(1).values.unsqueeze(1) == expected).sum(1).gt(1).any(), "the test needs ties"
    got = ArgmaxPatchExpand(up)(x)
    assert got.dtype == torch.uint8 and got.shape == (2, *expected.shape[2:])
    torch.testing.assert_close(got.long(), expected.argmax(1), rtol=0, atol=0)


def test_identity_folded_into_a_depthwise_conv() -> None:
    torch.manual_seed(0)
    depthwise = nn.Conv3d(8, 8, 3, padding=1, groups=8)
    x = torch.randn(1, 8, 5, 6, 7)
    torch.testing.assert_close(identity_folded(depthwise)(x), x + depthwise(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(AssertionError, match="same"):
        identity_folded(nn.Conv3d(8, 8, 3, padding=0, groups=8))


def test_instance_normed_conv_equals_conv_then_instance_norm() -> None:
    torch.manual_seed(0)
    conv = nn.Conv3d(6, 12, 1)
    norm = nn.InstanceNorm3d(12, affine=False)
    with torch.no_grad():
        conv.bias.uniform_(-3, 3)  # the bias must drop out
    x = torch.randn(2, 6, 5, 6, 7) + torch.arange(6.0).view(1, 6, 1, 1, 1)
    torch.testing.assert_close(InstanceNormedConv(conv, norm)(x), norm(conv(x)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(32, 32, 32), (16, 48, 32)])
def test_inference_graph_matches_the_network(shape) -> None:
    torch.manual_seed(0)
    net = FlareOrganNet(1, 14, **NARROW)
    _randomize_batchnorms(net)
    net.eval()
    graph = build_inference_graph(net)
    assert graph is not net and not graph.training
    x = torch.randn(1, 1, *shape)
    with torch.inference_mode():
        expected, got = net(x), graph(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    # the copy owns its weights: training the original afterwards does not change it
    with torch.no_grad():
        next(net.parameters()).add_(1.0)
        torch.testing.assert_close(graph(x), got)


def test_the_labels_graph_is_the_argmax_of_the_network() -> None:
    torch.manual_seed(0)
    net = FlareOrganNet(1, 14, **NARROW).eval()
    _randomize_batchnorms(net)
    x = torch.randn(1, 1, 16, 48, 32)
    with torch.inference_mode():
        logits, labels = build_inference_graph(net)(x), build_inference_graph(net, labels=True)(x)
    assert labels.dtype == torch.uint8 and labels.shape == (1, 16, 48, 32)
    torch.testing.assert_close(labels.long(), logits.argmax(1), rtol=0, atol=0)


def test_other_networks_are_returned_as_they_are_or_with_the_argmax() -> None:
    locator = FlareLocator(1, 2, features_per_stage=(8, 16, 32, 64), head_embed_dim=16, head_fuse_groups=16).eval()
    assert build_inference_graph(locator) is locator
    x = torch.randn(1, 1, 64, 64, 64)
    with torch.inference_mode():
        labels = build_inference_graph(locator, labels=True)(x)
        torch.testing.assert_close(labels.long(), locator(x).argmax(1), rtol=0, atol=0)
    assert labels.dtype == torch.uint8
