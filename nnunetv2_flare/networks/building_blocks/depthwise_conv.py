"""A depthwise 3-D convolution (one filter per channel, stride 1, 'same' zero padding) whose CPU backward pass is
computed from fast operations.

PyTorch's CPU backward of a depthwise `nn.Conv3d` takes an order of magnitude longer than its forward, and in a
training step of the demo's organ network those backward passes are a large share of the step
(tools/benchmark_training_step.py measures it). Here:
- the input's gradient is the same depthwise convolution of the output's gradient with the flipped kernel (a forward
  convolution, as fast as the forward pass);
- the weight's gradient is, per channel, the cross-correlation of the padded input with the output's gradient,
  summed over the batch: by FFT for kernels of 5 or more in every axis (faster than PyTorch's there), PyTorch's own
  weight-only backward for smaller kernels (FFT is slower there).
Parameters, initialisation and forward are `nn.Conv3d`'s, so checkpoints load either way; without gradients, or off
the CPU (cuDNN's backward is fast), it is `nn.Conv3d` unchanged.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

# FFT for the weight's gradient when every kernel axis is at least this long
FFT_MIN_KERNEL = 5


def _weight_gradient(x: torch.Tensor, grad_out: torch.Tensor, weight: torch.Tensor,
                     padding: tuple[int, int, int]) -> torch.Tensor:
    kernel = weight.shape[2:]
    # torch.fft has no bf16 / fp16 kernels on the CPU: those take PyTorch's own backward
    if min(kernel) >= FFT_MIN_KERNEL and x.dtype in (torch.float32, torch.float64):
        # grad_w[c, k] = sum_b sum_p x_pad[b, c, p + k] * g[b, c, p]: a correlation, a product in Fourier space
        padded = F.pad(x, [p for p in reversed(padding) for _ in range(2)])
        size = padded.shape[2:]
        spectrum = (torch.fft.rfftn(padded, s=size, dim=(2, 3, 4))
                    * torch.fft.rfftn(grad_out, s=size, dim=(2, 3, 4)).conj())
        full = torch.fft.irfftn(spectrum.sum(0), s=size, dim=(1, 2, 3))
        return full[:, :kernel[0], :kernel[1], :kernel[2]].unsqueeze(1).to(weight.dtype)
    channels = weight.shape[0]
    return torch.ops.aten.convolution_backward(grad_out, x, weight, None, (1, 1, 1), padding, (1, 1, 1), False,
                                               (0, 0, 0), channels, (False, True, False))[1]


class _DepthwiseConv3dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                padding: tuple[int, int, int]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        ctx.has_bias = bias is not None
        return F.conv3d(x, weight, bias, padding=padding, groups=weight.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv3d(grad_out, weight.flip(2, 3, 4), padding=ctx.padding, groups=weight.shape[0])
        if ctx.needs_input_grad[1]:
            grad_w = _weight_gradient(x, grad_out, weight, ctx.padding)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum((0, 2, 3, 4))
        return grad_x, grad_w, grad_b, None


class DepthwiseConv3d(nn.Conv3d):
    """`nn.Conv3d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)` (odd kernel sizes) with
    the faster CPU backward described in the module's docstring."""

    def __init__(self, channels: int, kernel_size: int | Sequence[int], bias: bool = True) -> None:
        kernel = (kernel_size,) * 3 if isinstance(kernel_size, int) else tuple(kernel_size)
        assert all(k % 2 == 1 for k in kernel), f"'same' padding needs odd kernel sizes, got {kernel}"
        super().__init__(channels, channels, kernel, padding=tuple(k // 2 for k in kernel), groups=channels,
                         bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (torch.is_grad_enabled() and x.device.type == "cpu"
                and (x.requires_grad or self.weight.requires_grad)):
            return _DepthwiseConv3dFunction.apply(x, self.weight, self.bias, self.padding)
        return super().forward(x)
