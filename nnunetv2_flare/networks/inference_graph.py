"""An inference-only rewrite of FlareOrganNet that computes the same function with fewer, faster operations.

The training network switches between channels-last (Linear, LayerNorm) and channels-first (convolutions) in every
block. On the CPU those layout changes cost more than the convolutions: in OpenVINO's per-layer profile of a 96^3
patch, reorders and transposes take ~40 % of the time. Here everything stays channels-first (NCDHW):
- each Linear becomes the equal 1x1x1 convolution, each LayerNorm a normalization over the channel axis;
- BatchNorm is folded into the convolution before it (LACB decoder, up blocks);
- grouped convolutions with a few channels per group, which OpenVINO runs with a generic slow kernel, become dense
  1x1x1 convs (stem, up blocks, the SAM's mixing conv) or a depthwise conv plus a summing 1x1x1 conv (LACB);
- the closing ConvTranspose3d (k2 s2) and the 1x1x1 classifier, both linear, become one ConvTranspose3d straight
  to the classes, run as a 1x1x1 conv and a depth-to-space reshuffle;
- fewer passes over memory where the work is memory-bound: normalization variances as one L2-norm reduction, the
  SAM's InstanceNorm centring the mixing conv's (narrower) input, the feed-forward's `h + dwconv(h)` as one conv.
Weights are copied, never shared with the training module. `build_inference_graph(net)` returns an eval-mode module
with the same input and output as `net` (deep supervision off); tests compare the two. With `labels=True` it returns
the argmax labels instead of the logits (what the cascade uses), taken before the closing depth-to-space so that the
reshuffle moves one byte per voxel instead of 14 floats.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nnunetv2_flare.networks.architectures.flare_organ_net import FlareOrganNet, LACBDecoder, OrganEncoderStage
from nnunetv2_flare.networks.building_blocks.sam_msa import (
    DetailFeedForward,
    MultiHeadSelfAttention,
    ScaleAwareModulator,
    TransformerBlock,
)


# ------------------------------------------------------------------------------------------ conversions
def linear_as_conv(linear: nn.Linear) -> nn.Conv3d:
    conv = nn.Conv3d(linear.in_features, linear.out_features, 1, bias=linear.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(linear.weight[:, :, None, None, None])
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


def unit_variance(centred: torch.Tensor, dims: tuple[int, ...], eps: float) -> torch.Tensor:
    """Centred values divided by sqrt(biased variance over `dims` + eps). The variance as an L2 norm of the centred
    values: one reduction in OpenVINO, where mean(centred ** 2) writes the squares out first."""
    norm = torch.linalg.vector_norm(centred, dim=dims, keepdim=True)
    count = math.prod(centred.shape[d] for d in dims)
    return centred * torch.rsqrt(norm.square() / count + eps)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of an NCDHW tensor (the training network's LayerNorm on NDHWC)."""

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.eps = norm.eps
        self.weight = nn.Parameter(norm.weight.detach().clone().view(1, -1, 1, 1, 1))
        self.bias = nn.Parameter(norm.bias.detach().clone().view(1, -1, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # OpenVINO has no one-kernel normalization over the channel axis alone (MVN there is per channel or over
        # everything), and F.layer_norm on a permuted view was slower (1.40 s vs 0.99 s a patch)
        return unit_variance(x - x.mean(1, keepdim=True), (1,), self.eps) * self.weight + self.bias


def fold_batchnorm(conv: nn.Conv3d, bn: nn.BatchNorm3d) -> nn.Conv3d:
    """conv followed by bn (eval statistics) as one convolution."""
    fused = copy.deepcopy(conv)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1, 1))
        fused.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
    return fused


def fold_conv_bn_relu6(block: nn.Sequential) -> nn.Sequential:
    """conv -> BN -> ReLU6 with BN folded, and a grouped conv of several inputs per group made dense (1x1x1) or split
    into a depthwise conv and a sum (see the two functions below)."""
    conv, bn, _ = block
    folded = fold_batchnorm(conv, bn)
    if folded.groups == 1 or folded.groups == folded.in_channels:  # dense or depthwise: fast as they are
        return nn.Sequential(folded, nn.ReLU6())
    if folded.kernel_size == (1, 1, 1):
        return nn.Sequential(grouped_as_dense(folded), nn.ReLU6())
    return nn.Sequential(*grouped_as_depthwise_and_sum(folded), nn.ReLU6())


def merge_transpose_and_classifier(up: nn.ConvTranspose3d, classifier: nn.Conv3d) -> nn.ConvTranspose3d:
    """classifier(up(x)) as one transposed convolution: both are linear, the classifier is 1x1x1."""
    w_c = classifier.weight[:, :, 0, 0, 0]  # (classes, mid)
    merged = nn.ConvTranspose3d(up.in_channels, classifier.out_channels, up.kernel_size, stride=up.stride,
                                padding=up.padding)
    with torch.no_grad():
        merged.weight.copy_(torch.einsum("imxyz,om->ioxyz", up.weight, w_c))
        merged.bias.copy_(w_c @ up.bias + classifier.bias)
    return merged


class PatchExpand(nn.Module):
    """A ConvTranspose3d whose kernel equals its stride (no overlap, no padding) as a 1x1x1 conv to
    out_channels * prod(kernel) channels followed by a depth-to-space reshuffle. OpenVINO runs the 1x1x1 conv as a
    plain matrix product and the reshuffle as one copy, faster than its transposed-conv kernel."""

    def __init__(self, up: nn.ConvTranspose3d) -> None:
        super().__init__()
        assert up.kernel_size == up.stride and up.padding == (0, 0, 0) and up.output_padding == (0, 0, 0) \
            and up.groups == 1 and up.dilation == (1, 1, 1), "only non-overlapping transposed convs"
        self.kernel_size = up.kernel_size
        self.out_channels = up.out_channels
        self.conv = nn.Conv3d(up.in_channels, up.out_channels * math.prod(up.kernel_size), 1)
        with torch.no_grad():  # (in, out, kd, kh, kw) -> rows ordered (out, kd, kh, kw)
            self.conv.weight.copy_(up.weight.permute(1, 2, 3, 4, 0).reshape(-1, up.in_channels)[..., None, None, None])
            bias = up.bias if up.bias is not None else torch.zeros(up.out_channels)
            self.conv.bias.copy_(bias.repeat_interleave(math.prod(up.kernel_size)))

    def blocks(self, x: torch.Tensor) -> torch.Tensor:
        """The 1x1x1 conv's output as (B, out_channels, kd, kh, kw, D, H, W)."""
        b, _, d, h, w = x.shape
        return self.conv(x).reshape(b, self.out_channels, *self.kernel_size, d, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depth_to_space(self.blocks(x))


def depth_to_space(blocks: torch.Tensor) -> torch.Tensor:
    """(..., kd, kh, kw, D, H, W) -> (..., D * kd, H * kh, W * kw): each voxel's kd x kh x kw block in place."""
    n = blocks.dim()
    kd, kh, kw, d, h, w = blocks.shape[-6:]
    lead = list(range(n - 6))
    return blocks.permute(*lead, n - 3, n - 6, n - 2, n - 5, n - 1, n - 4).reshape(
        *blocks.shape[:-6], d * kd, h * kh, w * kw)


class ArgmaxPatchExpand(PatchExpand):
    """PatchExpand followed by the argmax over its output channels (uint8 labels, B x D x H x W). The argmax is
    taken before the depth-to-space, which then moves one byte per voxel instead of a float per class; ties go to
    the lower class, as in torch.argmax (OpenVINO: a stable TopK)."""

    def __init__(self, up: nn.ConvTranspose3d) -> None:
        super().__init__(up)
        assert self.out_channels <= 256, "uint8 labels"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depth_to_space(self.blocks(x).argmax(1).to(torch.uint8))


class ArgmaxLabels(nn.Module):
    """A segmentation network's argmax labels (uint8, B x D x H x W) instead of its logits."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x).argmax(1).to(torch.uint8)


def identity_folded(depthwise: nn.Conv3d) -> nn.Conv3d:
    """x + depthwise(x) as one depthwise conv (1 added at each kernel's centre): one pass over x fewer."""
    assert depthwise.groups == depthwise.in_channels == depthwise.out_channels, "a depthwise conv"
    assert depthwise.stride == (1, 1, 1) and depthwise.dilation == (1, 1, 1) and all(
        k % 2 == 1 and p == k // 2 for k, p in zip(depthwise.kernel_size, depthwise.padding)), "a 'same' conv"
    folded = copy.deepcopy(depthwise)
    with torch.no_grad():
        folded.weight[(slice(None), 0, *[k // 2 for k in depthwise.kernel_size])] += 1
    return folded


# ------------------------------------------------------------------------------------------ blocks, NCDHW
def grouped_as_dense(conv: nn.Conv3d, input_channel: Callable[[int, int], int] | None = None) -> nn.Conv3d:
    """A grouped 1x1x1 conv as the equal dense one (zeros outside the groups). On the CPU, grouped convs with a few
    channels per group fall to a generic kernel; the dense conv's zeros cost less. `input_channel(g, j)`: the dense
    input channel that feeds input j of group g (default: the grouped conv's own, g * inputs_per_group + j)."""
    assert conv.kernel_size == (1, 1, 1), "only 1x1x1 convs become dense (a dense k^3 conv costs k^3 times more)"
    per_group = conv.in_channels // conv.groups
    out_per_group = conv.out_channels // conv.groups
    input_channel = input_channel or (lambda g, j: g * per_group + j)
    dense = nn.Conv3d(conv.in_channels, conv.out_channels, 1, bias=conv.bias is not None)
    weight = torch.zeros(conv.out_channels, conv.in_channels)
    for g in range(conv.groups):
        rows = slice(g * out_per_group, (g + 1) * out_per_group)
        for j in range(per_group):
            weight[rows, input_channel(g, j)] = conv.weight[rows, j, 0, 0, 0]
    with torch.no_grad():
        dense.weight.copy_(weight[:, :, None, None, None])
        if conv.bias is not None:
            dense.bias.copy_(conv.bias)
    return dense


def interleaved_grouped_as_dense(conv: nn.Conv3d, scales: int) -> nn.Conv3d:
    """The SAM's grouped 1x1x1 mixing conv, whose input is the per-scale outputs interleaved (channel s*i + j is
    channel i of scale j), as a dense 1x1x1 conv on the per-scale outputs concatenated (channel j*n + i). The
    channel interleave is a full copy of the activation; the zeros of the dense weight cost less than that."""
    n = conv.in_channels // scales  # channels per scale = groups
    return grouped_as_dense(conv, lambda g, j: j * n + g)


def grouped_as_depthwise_and_sum(conv: nn.Conv3d) -> nn.Sequential:
    """A grouped conv with one output per group (the LACB's slice conv: pairs of channels -> one) as a depthwise conv
    of every input channel followed by a dense 1x1x1 conv that sums each group's channels. In OpenVINO's profile
    at 120 -> 60 channels and 48^3, 18 ms instead of 48 ms: the depthwise and dense kernels are the fast ones."""
    per_group = conv.in_channels // conv.groups
    assert conv.out_channels == conv.groups, "one output channel per group"
    depthwise = nn.Conv3d(conv.in_channels, conv.in_channels, conv.kernel_size, stride=conv.stride,
                          padding=conv.padding, dilation=conv.dilation, groups=conv.in_channels, bias=False)
    total = nn.Conv3d(conv.in_channels, conv.out_channels, 1, bias=conv.bias is not None)
    with torch.no_grad():
        depthwise.weight.copy_(conv.weight.reshape(conv.in_channels, 1, *conv.kernel_size))
        total.weight.zero_()
        for g in range(conv.groups):
            total.weight[g, g * per_group:(g + 1) * per_group] = 1
        if conv.bias is not None:
            total.bias.copy_(conv.bias)
    return nn.Sequential(depthwise, total)


class InstanceNormedConv(nn.Module):
    """InstanceNorm (no affine) of a 1x1x1 conv's output. The norm removes each channel's mean, and the mean of a
    1x1x1 conv's output is the conv of the input's mean: so the input is centred (fewer channels than the output)
    and the conv's bias dropped."""

    def __init__(self, conv: nn.Conv3d, norm: nn.InstanceNorm3d) -> None:
        super().__init__()
        assert conv.kernel_size == (1, 1, 1) and not norm.affine and not norm.track_running_stats
        self.conv = nn.Conv3d(conv.in_channels, conv.out_channels, 1, groups=conv.groups, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(conv.weight)
        self.eps = norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return unit_variance(self.conv(x - x.mean((2, 3, 4), keepdim=True)), (2, 3, 4), self.eps)


class ScaleAwareModulatorCF(nn.Module):
    def __init__(self, sam: ScaleAwareModulator) -> None:
        super().__init__()
        self.head_channels = sam.head_channels
        self.v, self.s, self.proj = linear_as_conv(sam.v), linear_as_conv(sam.s), linear_as_conv(sam.proj)
        self.local_convs = copy.deepcopy(sam.local_convs)
        grouped, norm, *rest = sam.mix
        self.mix = nn.Sequential(InstanceNormedConv(interleaved_grouped_as_dense(grouped, len(sam.local_convs)), norm),
                                 *copy.deepcopy(rest))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v, s = self.v(x), self.s(x)
        per_scale = [conv(chunk) for conv, chunk in zip(self.local_convs, torch.split(s, self.head_channels, dim=1))]
        return self.proj(self.mix(torch.cat(per_scale, dim=1)) * v)


class MultiHeadSelfAttentionCF(nn.Module):
    def __init__(self, msa: MultiHeadSelfAttention) -> None:
        super().__init__()
        self.num_heads = msa.num_heads
        self.qkv, self.proj = linear_as_conv(msa.qkv), linear_as_conv(msa.proj)
        self.local_v = copy.deepcopy(msa.local_v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, d, h, w = x.shape
        qkv = self.qkv(x)
        v_map = qkv[:, 2 * c:]
        q, k, v = qkv.reshape(b, 3, self.num_heads, c // self.num_heads, d * h * w).transpose(3, 4).unbind(1)
        attn = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, head_dim)
        attn = attn.transpose(2, 3).reshape(b, c, d, h, w)
        return self.proj(attn + self.local_v(v_map))


class DetailFeedForwardCF(nn.Module):
    def __init__(self, ffn: DetailFeedForward) -> None:
        super().__init__()
        self.fc1, self.fc2 = linear_as_conv(ffn.fc1), linear_as_conv(ffn.fc2)
        self.dwconv = identity_folded(ffn.dwconv)  # h + dwconv(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.dwconv(self.fc1(x))))


class TransformerBlockCF(nn.Module):
    def __init__(self, block: TransformerBlock) -> None:
        super().__init__()
        self.norm1, self.norm2 = ChannelLayerNorm(block.norm1), ChannelLayerNorm(block.norm2)
        self.mixer = (ScaleAwareModulatorCF(block.mixer) if isinstance(block.mixer, ScaleAwareModulator)
                      else MultiHeadSelfAttentionCF(block.mixer))
        self.ffn = DetailFeedForwardCF(block.ffn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class EncoderStageCF(nn.Module):
    def __init__(self, stage: OrganEncoderStage) -> None:
        super().__init__()
        self.downsample = copy.deepcopy(stage.downsample)
        self.downsample_norm = ChannelLayerNorm(stage.downsample_norm) if stage.downsample_norm is not None else None
        self.blocks = nn.ModuleList([TransformerBlockCF(b) for b in stage.blocks])
        self.norm = ChannelLayerNorm(stage.norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample_norm(self.downsample(x))
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def fold_decoder(decoder: LACBDecoder, labels: bool = False) -> LACBDecoder:
    """A copy of the LACB decoder (its own forward, deep supervision off) with BatchNorm folded into the LACB and up
    block convolutions and the closing transposed conv merged with the classifier; `labels`: ending in the argmax."""
    folded = copy.deepcopy(decoder)
    folded.deep_supervision = False
    folded.ds_heads = nn.ModuleList()
    for lacb in (folded.bottleneck, *folded.lacbs):
        lacb.slice_conv = fold_conv_bn_relu6(lacb.slice_conv)
        lacb.in_slice = fold_conv_bn_relu6(lacb.in_slice)
        lacb.gate = fold_conv_bn_relu6(lacb.gate)
    for up in folded.ups:
        up.conv = fold_conv_bn_relu6(up.conv)
    expand = ArgmaxPatchExpand if labels else PatchExpand
    folded.final_up = expand(merge_transpose_and_classifier(decoder.final_up, decoder.classifier))
    folded.classifier = nn.Identity()
    return folded


# ------------------------------------------------------------------------------------------ the network
class FlareOrganNetInference(nn.Module):
    """FlareOrganNet's function (deep supervision off) with channels-first blocks and folded linear layers; with
    `labels`, its argmax labels (uint8) instead of the logits."""

    def __init__(self, net: FlareOrganNet, labels: bool = False) -> None:
        super().__init__()
        enc = net.encoder
        self.stem = copy.deepcopy(enc.stem)
        self.stem[-1] = grouped_as_dense(enc.stem[-1])  # c/2 -> c, one input per group
        self.stem_norm = ChannelLayerNorm(enc.stem_norm)
        self.stages = nn.ModuleList([EncoderStageCF(s) for s in enc.stages])
        self.decoder = fold_decoder(net.decoder, labels)  # the decoder is channels-first already
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_norm(self.stem(x))
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return self.decoder(skips)


def build_inference_graph(network: nn.Module, labels: bool = False) -> nn.Module:
    """The channels-first inference rewrite for a FlareOrganNet; any other network as it is. `labels`: the module
    returns the argmax labels (uint8, B x D x H x W) instead of the logits."""
    if isinstance(network, FlareOrganNet):
        return FlareOrganNetInference(network.eval(), labels)
    return ArgmaxLabels(network.eval()).eval() if labels else network
