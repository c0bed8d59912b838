"""ONNX Runtime for the frame backbone at inference: the LoRA-merged conv backbone, exported once.

On 2 CPU cores ONNX Runtime's kernels run EfficientNet-Lite0 several times faster than torch (its
depthwise convolutions above all; docs/results.md "Encoders"), and the frame backbone is most of what
scoring a clip costs. So when a run is scored or watched, :func:`attach` exports the frame encoder's
conv backbone (eval mode, every LoRA adapter folded into its base layer, on a copy) to ONNX with
``torch.onnx.export``, caches the file on disk, and hands the encoder an :class:`OnnxBackbone` whose
:meth:`~OnnxBackbone.run` replaces the torch backbone. Training never uses it: the encoder drops it
as soon as it is put back in training mode, and only inference-ready encoders (LoRA merged) get it.

The cache file is ``<root>/<key>.onnx``, the key a hash of the merged weights, the input size and the
torch / onnxruntime / opset versions, so new weights, another frame size or an upgrade export anew.
It is written atomically, and a file that does not load, or whose output on a fixed probe batch
differs from torch's, is exported again (a damaged or foreign file never reaches scoring).
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from mm_live.encoders.base import digest, is_lora_layer
from mm_live.errors import ConfigError
from mm_live.fileio import atomic_path

if TYPE_CHECKING:
    from mm_live.encoders.frame import FrameEncoder

OPSET = 17
RUNTIMES = ("auto", "torch", "onnx")


def available() -> bool:
    """True when ``onnxruntime`` (and ``onnx``, which ``torch.onnx.export`` writes with) import."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where exported backbones live: ``<cache_dir>/onnx`` (``encoders.cache_dir``) or
    ``$XDG_CACHE_HOME/mm-live/onnx`` (``~/.cache/mm-live/onnx``)."""
    if cache_dir:
        return Path(cache_dir) / "onnx"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mm-live" / "onnx"


def merged_copy(backbone: nn.Module) -> nn.Module:
    """An eval-mode copy of ``backbone`` with every peft LoRA layer folded into its base layer and
    unwrapped (what is exported: plain convs, no adapter branches or peft control flow)."""
    net = copy.deepcopy(backbone).eval()
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if is_lora_layer(child):
                if not child.merged:
                    child.merge()
                setattr(parent, name, child.get_base_layer())
    for p in net.parameters():
        p.requires_grad_(False)
    return net.to(memory_format=torch.contiguous_format)


def _probe(size: tuple[int, int], batch: int) -> torch.Tensor:
    """A fixed normalised-pixel batch [batch, 3, H, W] (what the check and the export trace run on)."""
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(0))


class OnnxBackbone:
    """A conv backbone exported to ONNX, run by an ONNX Runtime CPU session.

    ``run(x)``: normalised pixels x [N, 3, H, W] float32 -> feature map [N, C, h, w] float32 (CPU),
    the same as the torch backbone's full forward. H, W are fixed (``size``); N is dynamic.
    ``exported`` says whether loading it had to export (False: the cached file was used).
    """

    def __init__(self, session, path: Path, size: tuple[int, int], signature: str, exported: bool, load_s: float):
        self.session, self.path, self.size, self.signature = session, path, size, signature
        self.exported, self.load_s = exported, load_s
        self._input = session.get_inputs()[0].name

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 3, H, W] float32 (any memory format) -> [N, C, h, w] float32 on the CPU, no autograd."""
        if tuple(x.shape[-2:]) != self.size:
            raise ValueError(f"the exported frame backbone takes {self.size[0]}x{self.size[1]} frames, got "
                             f"{tuple(x.shape[-2:])}; attach it again for this frame size")
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self._input: arr})[0])

    def __deepcopy__(self, memo: dict) -> "OnnxBackbone":
        return self  # an immutable session: copies of a model share it

    @classmethod
    def load(cls, backbone: nn.Module, size: tuple[int, int], cache_dir: str | os.PathLike | None = None,
             threads: int | None = None) -> "OnnxBackbone":
        """The cached export of ``backbone`` (LoRA merged, eval mode) for ``size`` frames, exported first
        when missing, unreadable or not equal to torch on the probe batch. ``threads``: ONNX Runtime
        intra-op threads (default: torch's)."""
        with torch.inference_mode(False), torch.no_grad():  # scoring prepares under inference_mode; tracing cannot
            return cls._load(backbone, (int(size[0]), int(size[1])), cache_dir, threads or torch.get_num_threads())

    @classmethod
    def _load(cls, backbone: nn.Module, size: tuple[int, int], cache_dir: str | os.PathLike | None,
              threads: int) -> "OnnxBackbone":
        import onnxruntime as ort

        t0 = time.perf_counter()
        net = merged_copy(backbone)
        key = digest({"what": "frame-backbone-onnx", "class": type(backbone).__name__, "size": list(size),
                      "opset": OPSET, "torch": torch.__version__, "onnxruntime": ort.__version__},
                     sorted(net.state_dict().items()))
        path = cache_root(cache_dir) / f"{key}.onnx"
        probe = _probe(size, 1)
        want = net(probe).numpy()
        session, exported = _checked_session(path, probe, want, threads), False
        if session is None:
            _export(net, size, path)
            session, exported = _checked_session(path, probe, want, threads), True
            if session is None:
                raise ConfigError(f"encoders.frame.runtime: the ONNX export of the frame backbone at {path} does not "
                                  "reproduce torch's features; set encoders.frame.runtime to 'torch'")
        return cls(session, path, size, key, exported, time.perf_counter() - t0)


def _export(net: nn.Module, size: tuple[int, int], path: Path) -> None:
    """Trace ``net`` (batch axis dynamic) to ``path``, atomically."""
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # The TorchScript exporter (dynamo=False: no onnxscript dependency, exports these convs
        # exactly) warns that it is legacy and about constant folding of the padding slices.
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (_probe(size, 2),), str(tmp), input_names=["pixels"], output_names=["features"],
                          dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}}, opset_version=OPSET,
                          dynamo=False)


def _checked_session(path: Path, probe: torch.Tensor, want: np.ndarray, threads: int):
    """An InferenceSession on ``path`` if the file loads and matches torch on ``probe``; None otherwise."""
    import onnxruntime as ort

    if not path.is_file():
        return None
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.log_severity_level = 3  # errors only: a damaged cache file is handled here, not logged
    # Idle workers sleep instead of spinning: scoring alternates the frame backbone with torch work
    # (comment encoder, fusion) on the same cores (cf. OMP_WAIT_POLICY=PASSIVE in the benchmarks).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: probe.numpy()})[0]
    except Exception:  # onnxruntime raises its own exception types for unreadable/invalid models
        return None
    tol = 1e-3 * max(1.0, float(np.abs(want).max()))
    if got.shape != want.shape or not float(np.abs(got - want).max()) <= tol:
        return None
    return session


def wanted(frame: "FrameEncoder", setting: str) -> bool:
    """Should ``frame`` run on ONNX Runtime under ``setting`` ("auto", "torch", "onnx")? Only an
    inference-ready encoder qualifies: eval mode, conv backbone, every LoRA adapter merged."""
    if setting not in RUNTIMES:
        raise ConfigError(f"encoders.frame.runtime must be one of {list(RUNTIMES)}, got {setting!r}")
    if setting == "torch" or frame.training or frame.kind != "conv" or (setting == "auto" and frame.runtime_failed):
        return False
    lora = [m for m in frame.backbone.modules() if is_lora_layer(m)]
    if lora and not all(m.merged for m in lora):
        return False  # training, or evaluation inside a training run: the weights still move
    if not lora and not frame.inference_ready:
        return False  # no adapters to tell: only a run prepared for inference (Task.prepare_inference)
    if setting == "auto":
        return frame.spec["backbone"] == "efficientnet-lite0" and frame.mean.device.type == "cpu" and available()
    if frame.mean.device.type != "cpu":
        raise ConfigError("encoders.frame.runtime='onnx' runs on the CPU only; use runtime 'auto' or 'torch' with "
                          f"--device {frame.mean.device.type}")
    if not available():
        raise ConfigError("encoders.frame.runtime='onnx' needs the onnxruntime and onnx packages; "
                          "pip install -r requirements.txt, or set runtime 'torch'")
    return True


def attach(frame: "FrameEncoder", setting: str, size: tuple[int, int], cache_dir: str | os.PathLike | None = None) -> None:
    """Give ``frame`` an :class:`OnnxBackbone` for ``size`` frames when ``setting`` wants one (see
    :func:`wanted`); a no-op when the attached one already fits. Inference preparation, not module work."""
    if not wanted(frame, setting):
        return
    if frame.runtime is not None and frame.runtime.size == tuple(size):
        return
    try:
        frame.use_runtime(OnnxBackbone.load(frame.backbone, size, cache_dir))
    except Exception as exc:  # export/load failures of any kind: "auto" falls back to torch, "onnx" fails
        if setting == "onnx":
            raise
        frame.runtime_failed = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        warnings.warn(f"encoders.frame.runtime='auto': ONNX Runtime not used for the frame backbone "
                      f"({frame.runtime_failed}); running it with torch", RuntimeWarning, stacklevel=2)
