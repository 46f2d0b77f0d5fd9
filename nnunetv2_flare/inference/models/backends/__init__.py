"""What runs a phase's network.

- `base.py`: the model interface every backend implements, the backend choice and the precision check (re-exported
  here);
- `torch.py`: eager PyTorch (fp32, CPU or GPU), the reference;
- `openvino.py`: OpenVINO on the CPU (optional extra), the network converted once and cached.

Both take a (1, 1, *patch) input in the array order as read and return argmax labels (or, for fold ensembles and
mirroring, logits). Nothing here imports torch or OpenVINO: a prediction on cached OpenVINO models never loads torch.
"""
from nnunetv2_flare.inference.models.backends.base import (
                                                    BACKENDS,
                                                    PRECISIONS,
                                                    SegmentationModel,
                                                    argmax_labels,
                                                    check_precision,
                                                    native_bf16,
                                                    openvino_available,
                                                    resolve_backend,
                                                    tensor_axes,
)

__all__ = ["BACKENDS", "PRECISIONS", "SegmentationModel", "argmax_labels", "check_precision", "native_bf16",
           "openvino_available", "resolve_backend", "tensor_axes"]
