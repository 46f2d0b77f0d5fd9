"""The OpenVINO backend: both phases' networks on OpenVINO (optional extra: `pip install "nnunetv2-flare[openvino]"`).

The channels-first inference graph (networks/inference_graph.py), ending in the argmax, compiled by OpenVINO takes a
patch to its labels faster than eager PyTorch on a CPU (tools/benchmark_cascade.py measures both). Converting the
network takes tens of seconds, so the converted model (OpenVINO IR) is cached: next to the checkpoint
(`fold_X/openvino/`) when that folder is writable, else in $NNUNETV2_FLARE_CACHE or ~/.cache/nnunetv2_flare. The
cache key is the checkpoint's content hash, the patch size, the graph version and the OpenVINO version, so a new
checkpoint or a new OpenVINO never reuses a stale model. Files are written under temporary names and renamed.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from nnunetv2_flare.inference.geometry import VoxelGrid
from nnunetv2_flare.inference.models.backends.base import tensor_axes
from nnunetv2_flare.inference.models.digests import file_digest
from nnunetv2_flare.names import CACHE_ENV

if TYPE_CHECKING:  # torch is imported only to convert a checkpoint: a cached model runs without it
    from torch import nn

OV_TYPES = {"fp32": "f32", "bf16": "bf16"}
# bump when networks/inference_graph.py changes what it computes or how it is laid out, or what `convert` records
GRAPH_VERSION = 5
RT_INFO_WINDOW = ["nnunetv2_flare", "trained_window"]


def cache_folders(checkpoint_file: Path) -> list[Path]:
    user = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "nnunetv2_flare") / "openvino"
    return [checkpoint_file.parent / "openvino", user]


def _writable_folder(candidates: Sequence[Path]) -> Path | None:
    for folder in candidates:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".probe", delete=True)
            probe.close()
            return folder
        except OSError:
            continue
    return None


def convert(network: nn.Module, input_shape: Sequence[int], labels: bool = True):
    """An openvino.Model of the network's inference graph, traced at one input shape (1, 1, *patch): its argmax
    labels (uint8, 1 x *patch), or with `labels=False` its logits. The model keeps the shape computations, so
    `OpenVINOModel` reshapes it to other windows. The window range the network was trained on (its checkpoint's,
    see load_network) travels in the model's rt_info."""
    import openvino as ov
    import torch

    from nnunetv2_flare.networks.inference_graph import build_inference_graph

    graph = build_inference_graph(network.eval(), labels)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing warnings about shape checks that are constant for a fixed shape
        model = ov.convert_model(graph, example_input=torch.zeros(tuple(input_shape)))
    model.set_rt_info(json.dumps(getattr(network, "trained_window", None)), RT_INFO_WINDOW)
    return model


def trained_window(model) -> dict | None:
    """The window range recorded at conversion (`convert`), None for a fixed-patch model."""
    if not model.has_rt_info(RT_INFO_WINDOW):
        return None
    return json.loads(model.get_rt_info(RT_INFO_WINDOW).astype(str))


def cached_model_path(network: Callable[[], nn.Module], checkpoint_file: Path, input_shape: Sequence[int],
                      labels: bool = True) -> Path:
    """The IR file of this checkpoint and shape, converting and caching it on first use. `network` builds the loaded
    network; it is called only on a cache miss (a hit skips building and loading it). `labels=False`: the graph
    that returns logits (fold ensembles), cached under its own name."""
    import openvino as ov

    key = "_".join([checkpoint_file.stem, file_digest(checkpoint_file)[:16], "x".join(map(str, input_shape[2:])),
                    f"g{GRAPH_VERSION}", "ov" + ov.get_version().split("-")[0]] + ([] if labels else ["logits"]))
    folders = cache_folders(checkpoint_file)
    for folder in folders:
        if (folder / f"{key}.xml").is_file() and (folder / f"{key}.bin").is_file():
            return folder / f"{key}.xml"
    folder = _writable_folder(folders)
    if folder is None:
        raise RuntimeError(f"no writable folder for the OpenVINO model cache (tried {', '.join(map(str, folders))}); "
                           f"set {CACHE_ENV} or use --backend torch")
    print(f"nnUNetv2_flare: converting {checkpoint_file} to OpenVINO (once per checkpoint; the organ network takes "
          f"~30 s) -> {folder}", file=sys.stderr, flush=True)
    model = convert(network(), input_shape, labels)
    tmp = folder / f".{key}.{os.getpid()}.tmp.xml"
    try:
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), folder / f"{key}.bin")  # the .xml appears last: it marks completeness
        os.replace(tmp, folder / f"{key}.xml")
    finally:
        for leftover in (tmp, tmp.with_suffix(".bin")):
            leftover.unlink(missing_ok=True)
    return folder / f"{key}.xml"


def compile_config(precision: str = "fp32", threads: int | None = None) -> dict:
    """Latency mode, the precision pinned: left to itself OpenVINO picks bf16 on CPUs that have it, and the labels
    would then depend on the machine without the user asking for it."""
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": OV_TYPES[precision]}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


def compile_on_cpu(model, config: dict, compile_cache: Path | None = None):
    """core.compile_model on the CPU. With `compile_cache`, OpenVINO keeps the compiled kernels there and a later
    start skips compiling. Two processes starting on the same model at once (parallel predictions, -num_parts)
    write the same cache file, and OpenVINO can then fail in one of them; the cache only saves time, so that
    process compiles without it."""
    import openvino as ov
    if compile_cache is not None:
        core = ov.Core()
        core.set_property({"CACHE_DIR": str(compile_cache)})
        try:
            return core.compile_model(model, "CPU", config)
        except RuntimeError:
            pass
    return ov.Core().compile_model(model, "CPU", config)


class OpenVINOModel:
    """A compiled OpenVINO model of a network's labels (`convert`) as a phase model (`x, grid -> labels`, array order
    as read); or, converted with labels=False, of its logits (`.logits(x)`, ensemble members). It takes the shape it
    was converted at and, compiled once per new shape (OpenVINO's kernel cache keeps them for later processes), any
    other shape whose axes are multiples of `stride` (windows fitted to the crop)."""

    def __init__(self, model, input_shape: Sequence[int], transpose_forward: Sequence[int] = (0, 1, 2),
                 threads: int | None = None, compile_cache: Path | None = None, precision: str = "fp32",
                 stride: int = 1) -> None:
        import openvino as ov
        self.model_file = Path(model) if isinstance(model, (str, os.PathLike)) else None  # the cached IR, if any
        self.model = ov.Core().read_model(str(model)) if self.model_file else model
        self.config, self.compile_cache, self.stride = compile_config(precision, threads), compile_cache, int(stride)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.requests: dict[tuple[int, ...], object] = {}  # compiled on first use: fitted windows never use the patch
        self.trained_window = trained_window(self.model)
        self.forward_axes, backward = tensor_axes(transpose_forward)
        self.spatial_backward_axes = tuple(a - 2 for a in backward[2:])

    @property
    def precision(self) -> str:
        """What OpenVINO computes in: read back from a compiled model once one ran; before that the pinned hint,
        which OpenVINO follows (check_precision allows bf16 only where it is native)."""
        request = next(iter(self.requests.values()), None)
        effective = (request.get_compiled_model().get_property("INFERENCE_PRECISION_HINT").get_type_name()
                     if request is not None else self.config["INFERENCE_PRECISION_HINT"])
        return {v: k for k, v in OV_TYPES.items()}.get(effective, effective)

    def _compile(self, shape: tuple[int, ...]):
        import openvino as ov
        model = self.model
        if model.get_parameters()[0].get_partial_shape() != ov.PartialShape(list(shape)):
            model = self.model.clone()
            model.reshape({0: list(shape)})
        return compile_on_cpu(model, self.config, self.compile_cache)

    def _request(self, shape: tuple[int, ...]):
        if shape not in self.requests:
            if shape != self.input_shape and (len(shape) != len(self.input_shape) or shape[:2] != self.input_shape[:2]
                                              or any(n % self.stride for n in shape[2:])):
                raise ValueError(f"this OpenVINO model takes inputs of shape {self.input_shape} or, for other "
                                 f"windows, spatial axes that are multiples of {self.stride}; got {shape}")
            self.requests[shape] = self._compile(shape).create_infer_request()
        return self.requests[shape]

    def __call__(self, x: np.ndarray, grid: VoxelGrid | None = None) -> np.ndarray:
        x = np.ascontiguousarray(np.transpose(np.asarray(x, dtype=np.float32), self.forward_axes))
        out = self._request(tuple(x.shape)).infer({0: x})[0][0]  # labels (*spatial) or logits (C, *spatial)
        if out.ndim == len(self.spatial_backward_axes):
            return np.transpose(out, self.spatial_backward_axes)
        return np.transpose(out, (0, *[a + 1 for a in self.spatial_backward_axes]))

    def logits(self, x: np.ndarray, grid: VoxelGrid | None = None) -> np.ndarray:
        """(C, *spatial) float32 logits, array order as read, of a model converted with labels=False."""
        out = self(x, grid)
        if out.ndim != len(self.spatial_backward_axes) + 1:
            raise RuntimeError("this OpenVINO model returns labels, not logits (convert it with labels=False)")
        return out


def openvino_phase_model(network: Callable[[], nn.Module], checkpoint_file: Path,
                         patch_size_network_order: Sequence[int], transpose_forward: Sequence[int],
                         threads: int | None = None, precision: str = "fp32", labels: bool = True,
                         stride: int = 1) -> OpenVINOModel:
    input_shape = (1, 1, *[int(p) for p in patch_size_network_order])
    path = cached_model_path(network, checkpoint_file, input_shape, labels)
    compile_cache = path.parent / "compiled"
    try:
        compile_cache.mkdir(exist_ok=True)
    except OSError:  # a read-only cache still serves the model; compiling then happens on every start
        compile_cache = None
    return OpenVINOModel(str(path), input_shape, transpose_forward, threads, compile_cache, precision, stride)
