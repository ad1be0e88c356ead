"""The compiled generation step (csrc/fast_step.cpp): built on first use, loaded with ctypes.

The library is compiled once per machine with the system's C++ compiler (about a second) and
cached in native/ under `$WAVENET_CACHE` (default: the data cache's folder, ~/.cache/wavenet).
Without a compiler, with WAVENET_NATIVE=0, or when the built library's structures are laid out
otherwise than the ctypes declarations here, `library()` is None and generation uses the PyTorch
incremental path, which draws the same samples.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from wavenet.data import default_cache_dir
from wavenet.quantize import PRECISIONS, bf16_bits, int8_rows

SOURCE = Path(__file__).with_name("csrc") / "fast_step.cpp"
PANEL = 16  # output columns per packed weight panel, as in the C++ source
ABI_VERSION = 3
FORMATS = {precision: n for n, precision in enumerate(PRECISIONS)}  # WavenetNet::format

_c_float_p = ctypes.POINTER(ctypes.c_float)


class Net(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int32) for name in (
        "layers", "kernel_size", "residual", "gate", "skip", "params", "continuous_input",
        "mixtures", "format")] + [(name, ctypes.c_float) for name in (
            "skip_scale", "log_scale_min", "levels")] + [
        ("dilations", ctypes.POINTER(ctypes.c_int32)), ("embed", _c_float_p),
        ("conv_w", ctypes.c_void_p), ("out_w", ctypes.c_void_p), ("out_b", _c_float_p),
        ("head1_w", ctypes.c_void_p), ("head1_b", _c_float_p), ("head2_w", ctypes.c_void_p),
        ("head2_b", _c_float_p)] + [(name, _c_float_p) for name in (
            "conv_s", "out_s", "head1_s", "head2_s")]


class Run(ctypes.Structure):
    _fields_ = [("batch", ctypes.c_int32), ("steps", ctypes.c_int32),
                ("threads", ctypes.c_int32), ("t", ctypes.c_int64),
                ("temperature", ctypes.c_float), ("x", _c_float_p), ("ring", _c_float_p),
                ("ring_stride", ctypes.c_int64), ("bias", _c_float_p),
                ("bias_b", ctypes.c_int64), ("bias_step", ctypes.c_int64),
                ("noise", _c_float_p), ("noise_b", ctypes.c_int64),
                ("noise_step", ctypes.c_int64), ("out", _c_float_p), ("out_b", ctypes.c_int64),
                ("params_out", _c_float_p), ("params_b", ctypes.c_int64),
                ("params_c", ctypes.c_int64), ("forced", _c_float_p),
                ("forced_b", ctypes.c_int64)]


_state: dict = {}


def unavailable_reason() -> str | None:
    """Why the compiled step can't be used here, or None if it can."""
    library()
    return _state.get("why")


def library() -> ctypes.CDLL | None:
    """The compiled step, built on first use; None where it can't be built."""
    if "lib" not in _state:
        _state["lib"], _state["why"] = None, None
        if os.environ.get("WAVENET_NATIVE", "1") == "0":
            _state["why"] = "WAVENET_NATIVE=0"
        else:
            try:
                lib = ctypes.CDLL(str(_build()))
                if lib.wavenet_abi_version() != ABI_VERSION:
                    raise OSError("stale build")
                lib.wavenet_struct_layout.argtypes = [
                    ctypes.c_int, ctypes.POINTER(ctypes.c_int64), ctypes.c_int]
                mismatch = layout_mismatch(lib)
                if mismatch is not None:
                    raise OSError(f"{SOURCE.name} does not match native.py: {mismatch}")
                lib.wavenet_run.argtypes = [ctypes.POINTER(Net), ctypes.POINTER(Run)]
                lib.wavenet_gemm.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                                             ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                                             ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                             ctypes.c_int]
                _state["lib"] = lib
            except (OSError, AttributeError, subprocess.SubprocessError) as e:
                _state["why"] = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
    return _state["lib"]


def formats() -> tuple[str, ...]:
    """The weight precisions the compiled step runs well on this CPU (`wavenet_formats`):
    int8 needs a sign-extending byte load (AVX2 or AVX-512 on x86); fp32 and bf16 run on
    any CPU. Empty where the step can't be built."""
    lib = library()
    if lib is None:
        return ()
    if os.environ.get("WAVENET_NATIVE_FORMATS"):  # tests: pretend a CPU with fewer
        allowed = os.environ["WAVENET_NATIVE_FORMATS"].split(",")
    else:
        allowed = PRECISIONS
    mask = lib.wavenet_formats()
    return tuple(p for p in PRECISIONS if mask >> FORMATS[p] & 1 and p in allowed)


_KINDS = ("integer", "float", "pointer")  # the kinds wavenet_struct_layout reports, in order


def _layout(struct) -> tuple[int, list[tuple[int, int, int]]]:
    """A ctypes structure's size and each field's (offset, size, kind), in declaration order:
    what `wavenet_struct_layout` reports for its C++ twin."""
    fields = []
    for name, ctype in struct._fields_:
        kind = 2 if issubclass(ctype, (ctypes._Pointer, ctypes.c_void_p)) else int(
            ctype in (ctypes.c_float, ctypes.c_double))
        fields.append((getattr(struct, name).offset, getattr(struct, name).size, kind))
    return ctypes.sizeof(struct), fields


def _describe(field: tuple[int, int, int]) -> str:
    offset, size, kind = field
    return f"at byte {offset}, {size} bytes, {_KINDS[kind]}"


def layout_mismatch(lib) -> str | None:
    """How the library's WavenetNet and WavenetRun differ from `Net` and `Run`, or None.

    A difference would make the compiled step read its arguments from the wrong bytes, which
    no error reports: it computes garbage or crashes.
    """
    for which, (c_name, struct) in enumerate((("WavenetNet", Net), ("WavenetRun", Run))):
        size, fields = _layout(struct)
        out = (ctypes.c_int64 * (1 + 3 * len(fields)))()
        n = lib.wavenet_struct_layout(which, out, len(out))
        if n != len(fields):
            return f"{c_name} has {n} fields, Python's {struct.__name__} has {len(fields)}"
        for i, (name, _) in enumerate(struct._fields_):
            theirs = tuple(out[1 + 3 * i:4 + 3 * i])
            if theirs != fields[i]:
                return (f"field {i} ({struct.__name__}.{name}) is {_describe(theirs)} in "
                        f"{c_name} but {_describe(fields[i])} in Python")
        if out[0] != size:
            return f"sizeof({c_name}) is {out[0]}, ctypes.sizeof({struct.__name__}) is {size}"
    return None


def _cpu_signature() -> str:
    try:  # -march=native code is only good for this CPU model and its features
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "".join(x for x in lines if x.startswith(("model name", "flags", "Features")))
    except OSError:
        return platform.processor()


def _build() -> Path:
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") \
        or shutil.which("clang++")
    if cxx is None:
        raise OSError("no C++ compiler found (install g++ or set CXX)")
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True,
                             timeout=60).stdout
    cache = Path(os.environ.get("WAVENET_CACHE") or default_cache_dir()).expanduser() / "native"
    base = ["-O3", "-std=c++17", "-shared", "-fPIC", "-pthread"]
    errors = []
    for flags in (base + ["-march=native"], base):
        key = hashlib.sha256("\0".join([SOURCE.read_text(), cxx, version, *flags,
                                        _cpu_signature()]).encode()).hexdigest()[:16]
        target = cache / f"fast_step-{key}.so"
        if target.exists():
            return target
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
        os.close(fd)
        proc = subprocess.run([cxx, *flags, str(SOURCE), "-o", tmp], capture_output=True,
                              text=True, timeout=300)
        if proc.returncode == 0:
            os.replace(tmp, target)  # atomic: concurrent builders each publish a whole file
            return target
        os.unlink(tmp)
        errors.append(proc.stderr.strip() or f"{cxx} exited with {proc.returncode}")
    raise OSError(f"building {SOURCE.name} failed: {errors[-1]}")


def _pointer(t: torch.Tensor):
    return ctypes.cast(t.data_ptr(), _c_float_p)


def pack(w: torch.Tensor) -> torch.Tensor:
    """(K, N) -> panels of 16 columns, (⌈N/16⌉, K, 16) flattened, zero-padded; any dtype."""
    k, n = w.shape
    full = torch.zeros(k, -(-n // PANEL) * PANEL, dtype=w.dtype)
    full[:, :n] = w
    return full.view(k, -1, PANEL).transpose(0, 1).flatten()


def pack_weights(w: torch.Tensor, precision: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A (K, N) matrix as the compiled step reads it in `precision` (see the top of
    fast_step.cpp), and int8's column scales (padded to whole panels; None otherwise).

    The values are those of `quantize.rounded`: packing weights already rounded to
    `precision` stores them exactly.
    """
    if precision == "bf16":
        bits = bf16_bits(w).to(torch.int64)
        if bits.shape[0] % 2:
            bits = torch.cat([bits, torch.zeros_like(bits[:1])])
        words = bits[0::2] | (bits[1::2] << 16)  # row 2i low, row 2i+1 high
        return pack((words - (words >> 31 << 32)).to(torch.int32)), None
    if precision == "int8":
        q, scale = int8_rows(w.t())
        return pack(q.t().contiguous()), pack(scale[None])
    return pack(w.float()), None


class NativeStepper:
    """A WaveNet's weights packed for the compiled step, and the calls that run it.

    Built from the PyTorch incremental path's weight layout (`IncrementalStepper`), so both
    compute the same function.
    """

    def __init__(self, model, reference, precision: str = "fp32"):
        cfg = model.cfg
        dist = model.dist
        self.lib = library()
        self.precision = precision
        continuous = dist.continuous_input
        embed = torch.cat([reference.in_w, reference.in_b]) if continuous else reference.embed
        keep = {"dilations": torch.tensor(cfg.dilations, dtype=torch.int32),
                "embed": embed.float().contiguous(),
                # a bias is a one-row matrix: packing pads it to whole panels
                "out_b": torch.cat([pack(b[None].float()) for b in reference.out_b]),
                "head1_b": pack(reference.head1_b[None].float()),
                "head2_b": pack(reference.head2_b[None].float())}
        for name, matrices in (("conv", reference.conv_w), ("out", reference.out_w),
                               ("head1", [reference.head1_w]), ("head2", [reference.head2_w])):
            packed = [pack_weights(w, precision) for w in matrices]
            keep[f"{name}_w"] = torch.cat([w for w, _ in packed])
            if precision == "int8":
                keep[f"{name}_s"] = torch.cat([s for _, s in packed])
        self._keep = keep
        mixtures = getattr(dist, "mixtures", 0)
        self.net = Net(
            layers=len(cfg.dilations), kernel_size=cfg.kernel_size,
            residual=cfg.residual_channels, gate=cfg.gate_channels, skip=cfg.skip_channels,
            params=dist.num_params, continuous_input=int(continuous), mixtures=mixtures,
            format=FORMATS[precision], skip_scale=model.skip_scale,
            log_scale_min=getattr(dist, "log_scale_min", 0.0),
            levels=float(getattr(dist, "levels", 0)),
            dilations=ctypes.cast(keep["dilations"].data_ptr(), ctypes.POINTER(ctypes.c_int32)),
            **{name: (ctypes.c_void_p(t.data_ptr()) if name.endswith("_w") else _pointer(t))
               for name, t in keep.items() if name != "dilations"})

    @property
    def weight_bytes(self) -> int:
        """Bytes of packed weights one step reads (padding included)."""
        return sum(t.numel() * t.element_size() for name, t in self._keep.items()
                   if name.endswith("_w"))

    def run(self, t: int, x: torch.Tensor, ring: torch.Tensor, bias: torch.Tensor,
            bias_step: int, noise: torch.Tensor, out: torch.Tensor,
            params_out: torch.Tensor | None, temperature: float, threads: int,
            forced: torch.Tensor | None = None) -> None:
        """Run out.shape[1] steps from time t, in place.

        Args:
            x: (B,) float32 input of the first step; left holding the last sample.
            ring: (B, ring size) all layers' ring buffers (`IncrementalState.storage`).
            bias: (B, …) filter/gate inputs: stream b, step j, layer l at
                b·bias.stride(0) + j·bias_step + l·2G.
            noise: (B, steps, n) uniforms; out: (B, steps) float32;
            params_out: optional (B, P, steps) view, any strides.
            forced: optional (B, steps) float32: teacher forcing, the input after step j is
                forced[:, j] instead of the sample drawn (out still gets the draws).
        """
        batch, steps = out.shape
        for name, t_ in (("x", x), ("ring", ring), ("bias", bias), ("noise", noise),
                         ("out", out)):
            if t_.dtype != torch.float32 or t_.device.type != "cpu":
                raise ValueError(f"native step: {name} must be a float32 CPU tensor")
        if noise.stride(2) != 1 or out.stride(1) != 1 or not x.is_contiguous() \
                or not ring.is_contiguous() or (params_out is not None
                                                and params_out.stride(2) != 1) \
                or (forced is not None and (forced.dtype != torch.float32
                                            or forced.stride(1) != 1)):
            raise ValueError("native step: unsupported strides")
        run = Run(batch=batch, steps=steps, threads=threads, t=t, temperature=temperature,
                  x=_pointer(x), ring=_pointer(ring), ring_stride=ring.stride(0),
                  bias=_pointer(bias), bias_b=bias.stride(0), bias_step=bias_step,
                  noise=_pointer(noise), noise_b=noise.stride(0), noise_step=noise.stride(1),
                  out=_pointer(out), out_b=out.stride(0),
                  params_out=_pointer(params_out) if params_out is not None else None,
                  params_b=params_out.stride(0) if params_out is not None else 0,
                  params_c=params_out.stride(1) if params_out is not None else 0,
                  forced=_pointer(forced) if forced is not None else None,
                  forced_b=forced.stride(0) if forced is not None else 0)
        if self.lib.wavenet_run(ctypes.byref(self.net), ctypes.byref(run)) != 0:
            raise ValueError(f"native step: unknown weight format {self.net.format}")
