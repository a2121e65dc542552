"""``optimize_int8``: a static int8 model rewritten so that activations stay uint8 between int8 layers.

Every static int8 Conv / Linear of a quantized model is a drop-in module: float
in, its input rounded to the calibrated uint8 grid, oneDNN's int8 op, float
out.  Between two such layers that costs a float32 activation written and read
back, a float ReLU / max-pool and a re-quantization, about 3x the time of the
int8 convolutions themselves on a ResNet at batch 16.  This opt-in rewrite
(``torch.fx``, mono-quant's quantized modules as leaves) uses only what the
model holds, each static layer's calibrated input grid and its int8 weight, so
the model and its file stay as they are:

- a convolution or Linear whose output reaches only static int8 layers (directly
  or through ReLU, max-pooling, flatten / view / reshape, Identity, eval
  Dropout) emits uint8 codes on that consumer's input grid (oneDNN's op with
  that output scale and zero point), a ReLU after it fused as a post-op, and
  the consumer takes the codes as they are.  Rounding to the consumer's grid is
  what the consumer does anyway, and ReLU and max-pooling commute with a
  monotone rounding, so the consumer sees the same codes up to ties;
- a residual ``conv(x) + shortcut`` (+ ReLU) runs as the convolution with
  oneDNN's "sum" post-op (the ReLU fused after it): uint8 out on the next
  layer's grid where the shortcut is uint8 (its own grid: the one its other
  consumers read, or its own, below), else float32 out.  A float shortcut
  stays float32; the add's output is then quantized once for its consumers.
  This rounds the shortcut to its 8-bit grid, which the unrewritten model does
  not (as ``torch.ao``'s quantized add);
- an int8 layer (or fused add) whose output no consumer's grid describes, as
  only average pools read it (through ReLU, max-pooling, views: a CNN's last
  convolution before its global pool) or only a fused add as its shortcut (a
  downsampling convolution), gets its own output grid: min/max of that output
  on the example inputs (the engine's default activation observer), unless
  ``output_grids=False``.  Average pools then run on codes with float output
  (the exact average of the grid's values), the shortcut arrives as codes.
  The other extra 8-bit rounding, of a value the unrewritten model keeps float
  (``torch.ao`` rounds there too), checked below like everything else;
- everything else stays float, and values leave the int8 region as float32 in
  the layout the unrewritten model gives them (a contiguous input gives
  contiguous outputs).

A part that cannot be traced (data-dependent control flow) is left as it is
and its children are rewritten one by one; a pattern not covered stays float
in / float out; each such decision is a line of ``Int8Report.reasons``.  The
result is checked against the unrewritten model on the example inputs (output
SQNR at least ``min_sqnr_db``, else :class:`~mono_quant_core.errors.ValidationFailed`).
"""

from __future__ import annotations

import copy
import math
import operator
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .calibration.observers import MinMaxObserver
from .errors import ValidationFailed
from .kernels.base import plain_codes, quint8_view, uint8_codes
from .kernels.qconv_static import OnednnStaticConv
from .kernels.qlinear_static import OnednnState, OnednnStatic
from .kernels.select import select_conv_kernel, select_linear_kernel
from .modules.base import QuantizedModule
from .modules.conv import QuantizedConv1d, QuantizedConv2d, QuantizedConv3d, QuantizedConvNd
from .modules.linear import QuantizedLinear
from .tensor import sqnr_db
from .tensor.activations import activation_qparams_from_range

#: Output SQNR (dB) the rewritten model must keep against the unrewritten one on the example inputs.
MIN_SQNR_DB = 30.0

_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


@dataclass(frozen=True)
class Grid:
    """A uint8 activation grid: ``value = (code - zero_point) * scale``."""

    scale: float
    zero_point: int


@dataclass
class Int8Report:
    """What :func:`optimize_int8` did: ``layers`` maps each rewritten layer to ``"<in> -> <out>"``
    (``uint8`` or ``float32``, plus its fused post-ops), ``uint8_edges`` counts the graph edges that
    carry uint8 codes, ``fused`` the fusions by kind, ``reasons`` what was left as it was and why,
    ``sqnr_db`` the lowest output SQNR against the unrewritten model on the example inputs,
    ``output_grids`` the layers whose output grid was calibrated on the example inputs (their
    output no consumer's grid describes: only average pools read it, or a fused add as its shortcut)."""

    layers: dict[str, str] = field(default_factory=dict)
    uint8_edges: int = 0
    fused: dict[str, int] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    sqnr_db: float = math.inf
    output_grids: dict[str, Grid] = field(default_factory=dict)

    def count(self, kind: str) -> None:
        self.fused[kind] = self.fused.get(kind, 0) + 1


# -- the modules of a rewritten graph ------------------------------------------------------
class _Region:
    """The layout and dtype of the float input that entered the int8 region last (set at run
    time by the entry points, read by the exits: float outputs as the unrewritten model's)."""

    def __init__(self) -> None:
        self.channels_last = True
        self.dtype = torch.float32

    def restore(self, y: torch.Tensor) -> torch.Tensor:
        """A float output of the region in the layout and dtype the unrewritten model gives it."""
        if _CHANNELS_LAST.get(y.dim()) is None or not self.channels_last:
            y = y.contiguous()
        return y if y.dtype == self.dtype else y.to(self.dtype)

    def note(self, x: torch.Tensor) -> None:
        layout = _CHANNELS_LAST.get(x.dim())
        if layout is not None:
            self.channels_last = x.is_contiguous(memory_format=layout)
        self.dtype = x.dtype


def _dequantize(codes: torch.Tensor, grid: Grid) -> torch.Tensor:
    """``(codes - zero_point) * scale`` in float32: one vectorized pass through torch's quantized
    tensors where they exist (``kernels.base.quint8_view``), else two."""
    q = quint8_view(codes, grid.scale, grid.zero_point)
    if q is not None:
        try:
            return q.dequantize()
        except (RuntimeError, NotImplementedError):
            pass
    return (codes.to(torch.float32) - grid.zero_point) * grid.scale


def _to_layout(t: torch.Tensor) -> torch.Tensor:
    """``t`` channels-last (oneDNN's layout).  uint8 codes are copied as a quint8 view where torch
    has one: its reorder is about twice as fast as a plain uint8 one (a contiguous input's codes)."""
    layout = _CHANNELS_LAST.get(t.dim())
    if layout is None or t.is_contiguous(memory_format=layout):
        return t
    if t.dtype == torch.uint8:
        q = quint8_view(t, 1.0, 0)
        if q is not None:
            try:
                return plain_codes(q.contiguous(memory_format=layout))
            except (RuntimeError, NotImplementedError):
                pass
    return t.contiguous(memory_format=layout)


class _Int8Node(nn.Module):
    """Shared parts: where the input comes from (codes or float), where the output goes."""

    def __init__(self, name: str, region: _Region, codes_in: bool, out: Grid | None, relu: bool) -> None:
        super().__init__()
        self.layer = name
        self.region = region
        self.codes_in = codes_in
        self.out = out
        self.relu = relu
        #: An entry point: the float input comes from outside the region (its layout is noted).
        self.entry = not codes_in
        #: Float output restored to the region's layout and dtype (False: only int8 nodes read it).
        self.restore = True

    def _codes(self, x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
        if self.codes_in:
            return x
        if self.entry:
            self.region.note(x)
        return _to_layout(uint8_codes(x, scale, zero_point))

    def _exit(self, y: torch.Tensor) -> torch.Tensor:
        if self.out is not None or not self.restore:
            return y
        return self.region.restore(y)

    def extra_repr(self) -> str:
        out = "float32" if self.out is None else f"uint8 {self.out}"
        return f"{self.layer}: {'uint8' if self.codes_in else 'float'} -> {out}{' +relu' if self.relu else ''}"


class Int8Conv(_Int8Node):
    """A static int8 convolution (oneDNN ``qconv*d_pointwise``) on codes or float, out as codes or float."""

    def __init__(
        self,
        name: str,
        state: Any,
        kernel_size: tuple[int, ...],
        region: _Region,
        codes_in: bool,
        out: Grid | None,
        relu: bool,
    ) -> None:
        super().__init__(name, region, codes_in, out, relu)
        self.state = state
        self.kernel_size = tuple(kernel_size)

    def _conv(self, codes: torch.Tensor) -> torch.Tensor:
        packed, ws, zeros, bias, geometry, op, scale, zero_point = self.state
        attr = "relu" if self.relu else "none"
        out = self.out
        s, zp, dtype = (1.0, 0, torch.float32) if out is None else (out.scale, out.zero_point, torch.uint8)
        return cast(
            torch.Tensor, op(codes, scale, zero_point, packed, ws, zeros, bias, *geometry, s, zp, dtype, attr, [], "")
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._exit(self._conv(self._codes(x, self.state[6], self.state[7])))


class Int8ConvAdd(Int8Conv):
    """``relu?(conv(x) + accum)``: a 2-D int8 convolution with oneDNN's "sum" post-op.

    ``accum_grid``: the shortcut's grid where it arrives as codes (None: float32).  The op writes
    into its accumulator: ``clone_accum`` where another reader of that tensor runs later."""

    def __init__(
        self,
        name: str,
        state: Any,
        kernel_size: tuple[int, ...],
        region: _Region,
        codes_in: bool,
        out: Grid | None,
        relu: bool,
        accum_grid: Grid | None,
        clone_accum: bool,
    ) -> None:
        super().__init__(name, state, kernel_size, region, codes_in, out, relu)
        self.accum_grid = accum_grid
        self.clone_accum = clone_accum

    def forward(self, x: torch.Tensor, accum: torch.Tensor | None = None) -> torch.Tensor:
        if accum is None:
            raise TypeError(f"{self.layer}: the fused residual add needs its shortcut")
        packed, ws, zeros, bias, geometry, _, scale, zero_point = self.state
        codes = self._codes(x, scale, zero_point)
        if tuple(accum.shape) != self._out_shape(codes):
            return self._unfused(codes, accum)  # a broadcasting add: the op's sum cannot
        unary = "relu" if self.relu else None
        binary = torch.ops.onednn.qconv2d_pointwise.binary
        if self.out is not None and self.accum_grid is not None:
            a = _to_layout(accum.clone() if self.clone_accum else accum)
            s, zp, a_s, a_zp = self.out.scale, self.out.zero_point, self.accum_grid.scale, self.accum_grid.zero_point
            args = (s, zp, torch.uint8, a_s, a_zp)
        else:
            a = self._float(accum)
            args = (1.0, 0, torch.float32, 1.0, 0)
        y = binary(
            codes,
            scale,
            zero_point,
            packed,
            ws,
            zeros,
            a,
            bias,
            *geometry,
            *args[:3],
            *args[3:],
            "sum",
            1.0,
            unary,
            [],
            "",
        )
        if self.out is not None and self.accum_grid is None:
            return _to_layout(uint8_codes(y, self.out.scale, self.out.zero_point))
        return self._exit(cast(torch.Tensor, y))

    def _float(self, accum: torch.Tensor) -> torch.Tensor:
        """The shortcut as a float32 accumulator the op may overwrite (channels-last)."""
        if self.accum_grid is not None:
            a = _dequantize(accum, self.accum_grid)
            return _to_layout(a)
        layout = _CHANNELS_LAST[4]
        fresh = accum.dtype != torch.float32 or not accum.is_contiguous(memory_format=layout)
        a = accum.to(torch.float32).contiguous(memory_format=layout)
        return a.clone() if self.clone_accum and not fresh else a

    def _out_shape(self, codes: torch.Tensor) -> tuple[int, ...]:
        ws = self.state[1]
        stride, padding, dilation, _ = self.state[4]
        size = [
            (n + 2 * p - d * (k - 1) - 1) // s + 1
            for n, p, d, k, s in zip(codes.shape[2:], padding, dilation, self.kernel_size, stride, strict=True)
        ]
        return (codes.shape[0], ws.numel(), *size)

    def _unfused(self, codes: torch.Tensor, accum: torch.Tensor) -> torch.Tensor:
        relu, out = self.relu, self.out
        self.relu, self.out = False, None
        try:
            y = self._conv(codes)
        finally:
            self.relu, self.out = relu, out
        if self.accum_grid is not None:
            accum = _dequantize(accum, self.accum_grid)
        y = y + accum
        if relu:
            y = torch.relu(y)
        return _to_layout(uint8_codes(y, out.scale, out.zero_point)) if out is not None else self._exit(y)


class Int8Linear(_Int8Node):
    """A static int8 Linear (oneDNN ``qlinear_pointwise``) on codes or float, out as codes or float."""

    def __init__(
        self,
        name: str,
        state: OnednnState,
        out_features: int,
        region: _Region,
        codes_in: bool,
        out: Grid | None,
        relu: bool,
    ) -> None:
        super().__init__(name, region, codes_in, out, relu)
        self.state = state
        self.out_features = out_features
        self.restore = False  # no layout to restore; the dtype is the region's below

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        st = self.state
        lead = x.shape[:-1]
        codes = self._codes(x.reshape(-1, x.shape[-1]), st.scale, st.zero_point).contiguous()
        s, zp, dtype = (
            (1.0, 0, torch.float32) if self.out is None else (self.out.scale, self.out.zero_point, torch.uint8)
        )
        y = torch.ops.onednn.qlinear_pointwise(
            codes, st.scale, st.zero_point, st.packed, st.weight_scale, st.weight_zero_point, st.bias,
            s, zp, dtype, "relu" if self.relu else "none", [], "",
        )  # fmt: skip
        y = y.reshape(*lead, self.out_features)
        return y if self.out is not None or y.dtype == self.region.dtype else y.to(self.region.dtype)


class Restore(nn.Module):
    """Where a float output of the region meets an op that may depend on its layout (or the
    model's output): the layout and dtype the unrewritten model gives it.  Up to there, ReLU and
    pooling run on the op's channels-last floats (contiguous max-pooling costs many times more)."""

    def __init__(self, region: _Region) -> None:
        super().__init__()
        self.region = region

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.region.restore(y)


class Quantize(nn.Module):
    """A float value read only by int8 layers of one grid: its codes, computed once."""

    def __init__(self, grid: Grid, region: _Region, entry: bool) -> None:
        super().__init__()
        self.grid = grid
        self.region = region
        self.entry = entry

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.entry:
            self.region.note(x)
        return _to_layout(uint8_codes(x, self.grid.scale, self.grid.zero_point))

    def extra_repr(self) -> str:
        return str(self.grid)


class CodesReLU(nn.Module):
    """ReLU on codes: ``max(code, zero_point)``."""

    def __init__(self, grid: Grid) -> None:
        super().__init__()
        self.zero_point = grid.zero_point

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp_min(x, self.zero_point)


class CodesPool(nn.Module):
    """Max-pooling of codes (the same codes as pooling the values: rounding is monotone).

    torch's CPU max-pooling refuses channels-last uint8 tensors; its quantized max-pooling
    takes them, so the codes are viewed as a quint8 tensor (no copy); where torch lacks
    quantized tensors, the codes are pooled contiguous."""

    def __init__(self, pool: Callable[..., torch.Tensor], grid: Grid) -> None:
        super().__init__()
        self.pool = pool
        self.grid = grid

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        q = quint8_view(x, self.grid.scale, self.grid.zero_point)
        if q is not None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # torch's deprecation notice of quantized tensors
                    return plain_codes(self.pool(q, *args, **kwargs))
            except (RuntimeError, NotImplementedError):
                pass
        return _to_layout(self.pool(x.contiguous(), *args, **kwargs))


class CodesAvgPool(nn.Module):
    """Average pooling of codes, float out: ``(pool(codes) - zero_point) * scale``, the average of the
    values exactly (up to float32 rounding: averaging commutes with the affine map, no rounding to
    the grid as a quantized average pool would add).  It is an exit of the int8 region: the pooled
    floats in the layout and dtype the unrewritten model gives them."""

    def __init__(self, pool: Callable[..., torch.Tensor], grid: Grid, region: _Region) -> None:
        super().__init__()
        self.pool = pool
        self.grid = grid
        self.region = region

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        y = self.pool(x.to(torch.float32), *args, **kwargs)
        return self.region.restore((y - self.grid.zero_point) * self.grid.scale)

    def extra_repr(self) -> str:
        return str(self.grid)


# -- the rewrite ---------------------------------------------------------------------------
class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer with every mono-quant quantized module as a leaf."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, QuantizedModule) or super().is_leaf_module(m, module_qualified_name)


_RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_, F.relu_}
_POOL_FUNCTIONS = {F.max_pool1d, F.max_pool2d, F.max_pool3d, torch.max_pool1d, torch.max_pool2d, torch.max_pool3d}
#: Ops that work on codes as they are (no value changes): shapes and copies.
_VIEW_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}
_VIEW_METHODS = {"view", "reshape", "flatten", "contiguous", "squeeze", "unsqueeze"}
_SHAPE_METHODS = {"size", "dim"}
_ADDS = {operator.add, operator.iadd, torch.add}
_CONVS = (QuantizedConv1d, QuantizedConv2d, QuantizedConv3d)
#: Float modules whose output keeps the input's layout (the values do not depend on it).
_LAYOUT_KEEPING = (
    nn.ReLU,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool2d,
    nn.Identity,
)
_ADAPTIVE_AVG_FUNCTIONS = {F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d}
#: ``want`` of a value no reader needs on a particular grid.
_ANY = object()
#: ``want`` of a value whose every reader takes codes on any grid (average pooling, through ReLU /
#: max-pooling / views; a fused residual add's accumulator): an int8 layer emitting it gets its
#: own output grid, calibrated on the example inputs.
_OWN = object()


class _Rewrite:
    """One traced graph rewritten in place (see the module docstring)."""

    def __init__(
        self,
        gm: torch.fx.GraphModule,
        prefix: str,
        report: Int8Report,
        inputs: Callable[[], list[tuple[Any, ...]]] | None = None,
    ) -> None:
        self.gm = gm
        #: The traced module's inputs on the example inputs (one tuple per call), for output grids;
        #: None: no output grids are calibrated.
        self.inputs = inputs
        self.graph = gm.graph
        self.prefix = prefix
        self.report = report
        self.modules = dict(gm.named_modules())
        self.region = _Region()
        self.order = {n: i for i, n in enumerate(self.graph.nodes)}
        #: int8 layer nodes and their packed kernel state, input grid, kind ("conv" / "linear").
        self.layers: dict[torch.fx.Node, tuple[Any, Grid, str]] = {}
        #: add node -> (main conv node, shortcut node, ReLU node after it or None).
        self.adds: dict[torch.fx.Node, tuple[torch.fx.Node, torch.fx.Node, torch.fx.Node | None]] = {}
        self.want: dict[torch.fx.Node, Any] = {}
        #: Output grids calibrated on the example inputs, by the node whose value they describe.
        self.calibrated: dict[torch.fx.Node, Grid] = {}

    def name(self, target: str) -> str:
        return f"{self.prefix}.{target}" if self.prefix else target

    # -- classification ----------------------------------------------------------------
    def module(self, n: torch.fx.Node) -> nn.Module | None:
        return self.modules.get(cast(str, n.target)) if n.op == "call_module" else None

    def is_relu(self, n: torch.fx.Node) -> bool:
        m = self.module(n)
        if m is not None:
            inplace, relu = bool(getattr(m, "inplace", False)), type(m) is nn.ReLU
        elif n.op == "call_function":
            inplace = n.target in (torch.relu_, F.relu_) or bool(n.kwargs.get("inplace", False))
            relu = n.target in _RELU_FUNCTIONS and len(n.args) == 1 and set(n.kwargs) <= {"inplace"}
        else:
            inplace = n.target == "relu_"
            relu = n.op == "call_method" and n.target in ("relu", "relu_") and len(n.args) == 1 and not n.kwargs
        # An in-place ReLU changes its input for every other reader too: only as its input's one reader.
        source = n.args[0] if n.args else None
        return relu and (not inplace or (isinstance(source, torch.fx.Node) and len(source.users) == 1))

    def is_pool(self, n: torch.fx.Node) -> bool:
        m = self.module(n)
        if m is not None:
            return isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)) and not m.return_indices
        return (
            n.op == "call_function"
            and n.target in _POOL_FUNCTIONS
            and not n.kwargs.get("return_indices", False)
            and not any(isinstance(a, torch.fx.Node) for a in (*n.args[1:], *n.kwargs.values()))
        )

    def is_avg_pool(self, n: torch.fx.Node) -> bool:
        """An average pool whose average of codes is the codes of the average (no padding counted
        in, no divisor override): adaptive average pooling, or ``AvgPool*d`` without those."""
        m = self.module(n)
        if m is not None:
            if isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)):
                return True
            if isinstance(m, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
                padding = m.padding if isinstance(m.padding, tuple) else (m.padding,)
                no_pad = not m.count_include_pad or all(p == 0 for p in padding)
                return no_pad and getattr(m, "divisor_override", None) is None
            return False
        return (
            n.op == "call_function"
            and n.target in _ADAPTIVE_AVG_FUNCTIONS
            and not any(isinstance(a, torch.fx.Node) for a in (*n.args[1:], *n.kwargs.values()))
        )

    def is_view(self, n: torch.fx.Node) -> bool:
        m = self.module(n)
        if m is not None:
            return type(m) in (nn.Identity, nn.Flatten) or (isinstance(m, nn.Dropout) and not m.training)
        if n.op == "call_function":
            return n.target in _VIEW_FUNCTIONS
        return n.op == "call_method" and n.target in _VIEW_METHODS

    def passes(self, n: torch.fx.Node) -> bool:
        """A grid-preserving op whose data input is ``args[0]``."""
        return (
            bool(n.args)
            and isinstance(n.args[0], torch.fx.Node)
            and (self.is_relu(n) or self.is_pool(n) or self.is_view(n))
        )

    def shape_only(self, n: torch.fx.Node) -> bool:
        if n.op == "call_method":
            return n.target in _SHAPE_METHODS
        return n.op == "call_function" and n.target is getattr and n.args[1:] in (("shape",), ("ndim",))

    @staticmethod
    def only_input(user: torch.fx.Node, n: torch.fx.Node) -> bool:
        """``n`` is ``user``'s ``args[0]`` and appears nowhere else in its arguments."""
        return bool(user.args) and user.args[0] is n and _uses(user, n) == 1

    # -- step 1: the int8 layers ---------------------------------------------------------
    def find_layers(self) -> None:
        for n in self.graph.nodes:
            m = self.module(n)
            if not isinstance(m, QuantizedModule) or m.mode != "static":
                continue
            where = self.name(cast(str, n.target))
            if len(n.args) != 1 or n.kwargs:
                self.report.reasons.append(f"{where}: called with more than one argument; stays float in/out")
                continue
            found = self.pack(m, where)
            if found is not None:
                state, grid, kind = found
                self.layers[n] = (state, grid, kind)

    def pack(self, m: QuantizedModule, where: str) -> tuple[Any, Grid, str] | None:
        if isinstance(m, _CONVS):
            conv_kernel, state = select_conv_kernel(cast(QuantizedConvNd, m))[1]
            if not isinstance(conv_kernel, OnednnStaticConv):
                self.report.reasons.append(f"{where}: no oneDNN int8 convolution applies; stays float in/out")
                return None
            packed = cast(tuple[Any, ...], state)
            return packed, Grid(float(packed[6]), int(packed[7])), "conv"
        if isinstance(m, QuantizedLinear):
            if m.smoothquant is not None and "input_smoothing" in m._buffers:
                self.report.reasons.append(f"{where}: divides its input by SmoothQuant factors; stays float in/out")
                return None
            kernel, lstate = select_linear_kernel(m)[1]
            if not isinstance(kernel, OnednnStatic):
                self.report.reasons.append(
                    f"{where}: kernel {kernel.name} is not oneDNN's int8 Linear; stays float in/out"
                )
                return None
            st = cast(OnednnState, lstate)
            return st, Grid(st.scale, st.zero_point), "linear"
        self.report.reasons.append(f"{where}: {type(m).__name__} has no int8 graph form; stays float in/out")
        return None

    # -- step 2: residual adds -------------------------------------------------------------
    def find_adds(self) -> None:
        for n in self.graph.nodes:
            if n.op not in ("call_function", "call_method") or len(n.args) != 2 or n.kwargs:
                continue
            if not (n.target in _ADDS or (n.op == "call_method" and n.target in ("add", "add_"))):
                continue
            a, b = n.args
            if not (isinstance(a, torch.fx.Node) and isinstance(b, torch.fx.Node)) or a is b:
                continue
            main = next((c for c in (a, b) if self.fusable_conv(c)), None)
            if main is None:
                continue
            shortcut = b if main is a else a
            users = list(n.users)
            relu = users[0] if len(users) == 1 and self.is_relu(users[0]) and users[0].args[0] is n else None
            self.adds[n] = (main, shortcut, relu)

    def fusable_conv(self, c: torch.fx.Node) -> bool:
        layer = self.layers.get(c)
        return layer is not None and layer[2] == "conv" and len(c.users) == 1 and len(layer[0][4][0]) == 2

    # -- step 3: which grid each value should carry --------------------------------------
    def find_grids(self) -> None:
        """``want[n]``: the grid every reader of ``n`` takes it on (None: some reader needs float;
        ``_ANY``: no reader cares, e.g. a shape read; ``_OWN``: every reader takes codes on any
        grid, e.g. average pools and a fused add's accumulator)."""
        accum_of = {short: add for add, (_, short, _) in self.adds.items()}
        for n in reversed(self.graph.nodes):
            wanted: set[Any] = set()
            for u in n.users:
                if u in self.layers and self.only_input(u, n):
                    wanted.add(self.layers[u][1])
                elif self.shape_only(u):
                    wanted.add(_ANY)
                elif accum_of.get(n) is u:
                    wanted.add(_OWN)  # as codes on any grid, or float
                elif self.passes(u) and self.only_input(u, n):
                    wanted.add(self.want.get(u))
                elif self.is_avg_pool(u) and self.only_input(u, n):
                    wanted.add(_OWN)
                else:
                    wanted.add(None)
            wanted.discard(_ANY)
            own = _OWN in wanted
            wanted.discard(_OWN)  # these readers take codes on any grid: on the other readers' one
            grids = {g for g in wanted if g is not None}
            if not wanted:
                self.want[n] = _OWN if own else _ANY if n.users else None
            else:
                self.want[n] = next(iter(grids)) if len(wanted) == 1 and grids else None
            if len(grids) > 1:
                self.report.reasons.append(f"{n.name}: read by int8 layers of different input grids; stays float")

    def wanted(self, n: torch.fx.Node) -> Grid | None:
        g = self.want.get(n)
        return g if isinstance(g, Grid) else self.calibrated.get(n)

    # -- step 3b: own output grids of int8 layers no consumer's grid describes ------------------
    def own_grid_ends(self) -> dict[torch.fx.Node, str]:
        """The value each int8 layer (or fused add) ends as, where only readers that take codes on
        any grid read it (``_OWN``: average pools, through ReLU, max-pooling, views; a fused add
        as its shortcut), by the layer's name."""
        ends: dict[torch.fx.Node, str] = {}
        mains = {main for main, _, _ in self.adds.values()}
        for n in self.layers:
            end = self.output_of(n)[0]
            if n not in mains and self.want.get(end) is _OWN:
                ends[end] = self.name(cast(str, n.target))
        for add, (main, _, relu) in self.adds.items():
            end = relu if relu is not None else add
            if self.want.get(end) is _OWN:
                ends[end] = self.name(cast(str, main.target))
        return ends

    def calibrate(self) -> None:
        """Min/max output grids (the engine's default activation observer, on the signed grid of
        ``tensor.activations``, shifted to uint8) of :meth:`own_grid_ends`, measured by running the
        unrewritten graph on the traced module's inputs from the example inputs."""
        ends = self.own_grid_ends()
        if not ends:
            return
        calls = self.inputs() if self.inputs is not None else []
        if not calls:
            for where in ends.values():
                self.report.reasons.append(
                    f"{where}: no consumer's grid describes its output and no example input reached it to calibrate "
                    "an output grid; stays float32 out"
                )
            return
        observers = {n: MinMaxObserver() for n in ends}
        recorder = _Recorder(self.gm, observers)
        try:
            with torch.inference_mode():
                for args in calls:
                    recorder.run(*args)
        except Exception as e:  # the graph run op by op where the module ran: any failure is a refusal
            self.report.reasons.append(
                f"{self.prefix or 'model'}: its graph did not run op by op on the example inputs "
                f"({type(e).__name__}); no own output grids, those outputs stay float32"
            )
            return
        for n, where in ends.items():
            lo, hi = observers[n].lo, observers[n].hi
            if lo is None or hi is None:
                self.report.reasons.append(f"{where}: its output was not a tensor on the example inputs; stays float32")
                continue
            scale, zero_point = activation_qparams_from_range(lo, hi)
            grid = Grid(float(scale.reshape(-1)[0]), int(zero_point.reshape(-1)[0]) + 128)
            self.calibrated[n] = grid
            self.report.output_grids[where] = grid

    # -- step 4: rewrite -----------------------------------------------------------------
    def run(self) -> None:
        self.find_layers()
        if not self.layers:
            return
        self.find_adds()
        self.find_grids()
        self.calibrate()
        rep: dict[torch.fx.Node, Grid | None] = {}
        fused_away: set[torch.fx.Node] = set()
        mains = {main: add for add, (main, _, _) in self.adds.items()}
        for n in list(self.graph.nodes):
            if n in fused_away or n.op == "output":
                continue
            if n in mains:
                continue  # rewritten at its add
            if n in self.layers:
                rep[n] = self.rewrite_layer(n, rep, fused_away)
            elif n in self.adds:
                self.rewrite_add(n, rep, fused_away)
                continue  # the add node is gone: its fused node is quantized by the op where wanted
            elif self.passes(n) and rep.get(cast(torch.fx.Node, n.args[0])) is not None:
                rep[n] = self.rewrite_pass(n, cast(Grid, rep[cast(torch.fx.Node, n.args[0])]))
            elif self.is_avg_pool(n) and rep.get(cast(torch.fx.Node, n.args[0])) is not None:
                self.rewrite_avg_pool(n, cast(Grid, rep[cast(torch.fx.Node, n.args[0])]))
                rep[n] = None  # float out
            else:
                rep[n] = None
            self.quantize_if_wanted(n, rep)
        for n in self.graph.nodes:
            if rep.get(n) is not None:
                self.report.uint8_edges += len(n.users)
        self.place_restores()
        self.graph.eliminate_dead_code()
        self.graph.lint()
        self.gm.recompile()
        self.gm.delete_all_unused_submodules()

    def add_module(self, n: torch.fx.Node, module: nn.Module) -> str:
        name = "int8_" + cast(str, n.target if n.op == "call_module" else n.name).replace(".", "_")
        while hasattr(self.gm, name):
            name += "_"
        self.gm.add_submodule(name, module)
        return name

    def output_of(self, n: torch.fx.Node) -> tuple[torch.fx.Node, bool]:
        """The node whose value ``n`` ends as, and whether that is a ReLU fused into ``n``."""
        users = list(n.users)
        if len(users) == 1 and self.is_relu(users[0]) and users[0].args[0] is n:
            return users[0], True
        return n, False

    def rewrite_layer(
        self, n: torch.fx.Node, rep: dict[torch.fx.Node, Grid | None], fused_away: set[torch.fx.Node]
    ) -> Grid | None:
        state, _, kind = self.layers[n]
        source = cast(torch.fx.Node, n.args[0])
        codes_in = rep.get(source) is not None
        end, relu = self.output_of(n)
        out = self.wanted(end)
        if not (codes_in or relu or out is not None):
            return None  # float in, float out, nothing fused: the module as it was
        where = self.name(cast(str, n.target))
        m = self.module(n)
        if kind == "conv":
            kernel_size = cast(QuantizedConvNd, m).kernel_size
            module: _Int8Node = Int8Conv(where, state, kernel_size, self.region, codes_in, out, relu)
        else:
            module = Int8Linear(where, state, cast(QuantizedLinear, m).out_features, self.region, codes_in, out, relu)
        module.entry = not codes_in and not self.from_region(source)
        n.target = self.add_module(n, module)
        if relu:
            self.report.count(f"{kind}+relu")
            end.replace_all_uses_with(n)
            fused_away.add(end)
            self.graph.erase_node(end)
        self.describe(where, codes_in, out, relu)
        return out

    def rewrite_add(
        self, n: torch.fx.Node, rep: dict[torch.fx.Node, Grid | None], fused_away: set[torch.fx.Node]
    ) -> Grid | None:
        main, _, relu_node = self.adds[n]
        a, b = cast(tuple[torch.fx.Node, torch.fx.Node], n.args)
        shortcut = b if a is main else a  # the current one: maybe a Quantize node of the original
        state = self.layers[main][0]
        source = cast(torch.fx.Node, main.args[0])
        codes_in = rep.get(source) is not None
        end = relu_node if relu_node is not None else n
        out = self.wanted(end)
        accum_grid = rep.get(shortcut)
        where = self.name(cast(str, main.target))
        conv = cast(QuantizedConvNd, self.module(main))
        module = Int8ConvAdd(
            where,
            state,
            conv.kernel_size,
            self.region,
            codes_in,
            out,
            relu_node is not None,
            accum_grid,
            self.read_later(shortcut, n),
        )
        module.entry = not codes_in and not self.from_region(source)
        name = self.add_module(main, module)
        with self.graph.inserting_before(n):
            fused = self.graph.call_module(name, (source, shortcut))
        end.replace_all_uses_with(fused)
        for dead in ([relu_node] if relu_node is not None else []) + [n, main]:
            fused_away.add(dead)
            self.graph.erase_node(dead)
        self.report.count("conv+add+relu" if relu_node is not None else "conv+add")
        shortcut_kind = "uint8" if accum_grid is not None else "float32"
        self.describe(where, codes_in, out, relu_node is not None, f" +add({shortcut_kind} shortcut)")
        rep[fused] = out
        return out

    def rewrite_pass(self, n: torch.fx.Node, grid: Grid) -> Grid:
        if self.is_relu(n):
            n.op, n.target, n.args, n.kwargs = "call_module", self.add_module(n, CodesReLU(grid)), n.args[:1], {}
        elif self.is_pool(n):
            m = self.module(n)
            pool = m if m is not None else cast(Callable[..., torch.Tensor], n.target)
            n.op, n.target = "call_module", self.add_module(n, CodesPool(pool, grid))
        elif n.op == "call_method" and n.target == "view":
            n.target = "reshape"  # codes are channels-last where the floats were contiguous
        return grid

    def rewrite_avg_pool(self, n: torch.fx.Node, grid: Grid) -> None:
        m = self.module(n)
        pool = m if m is not None else cast(Callable[..., torch.Tensor], n.target)
        n.op, n.target = "call_module", self.add_module(n, CodesAvgPool(pool, grid, self.region))
        self.report.count("avg-pool on codes")

    def quantize_if_wanted(self, n: torch.fx.Node, rep: dict[torch.fx.Node, Grid | None]) -> None:
        """A float value read only by int8 layers of one grid gets one Quantize node."""
        grid = self.wanted(n)
        if grid is None or rep.get(n) is not None:
            return
        name = self.add_module(n, Quantize(grid, self.region, not self.from_region(n)))
        with self.graph.inserting_after(n):
            q = self.graph.call_module(name, (n,))
        n.replace_all_uses_with(q, delete_user_cb=lambda u: u is not q and not self.shape_only(u))
        rep[q] = grid

    def from_region(self, n: torch.fx.Node) -> bool:
        return n.op == "call_module" and isinstance(self.module_of(n), (_Int8Node, CodesAvgPool))

    def module_of(self, n: torch.fx.Node) -> nn.Module | None:
        return self.gm.get_submodule(cast(str, n.target)) if n.op == "call_module" else None

    def read_later(self, shortcut: torch.fx.Node, add: torch.fx.Node) -> bool:
        """Whether the shortcut's tensor (or a view of it) is read after ``add`` or belongs to the
        caller (an input, a parameter): the sum post-op overwrites it, so it is copied first."""
        base = shortcut
        while self.is_view(base) and isinstance(base.args[0], torch.fx.Node):
            base = base.args[0]
        if base.op in ("placeholder", "get_attr"):
            return True
        aliases, stack = {base}, [base]
        while stack:
            for u in stack.pop().users:
                if self.is_view(u) and u not in aliases:
                    aliases.add(u)
                    stack.append(u)
        position = self.order[add]
        return any(
            u is not add and u not in aliases and self.order.get(u, math.inf) > position
            for a in aliases
            for u in a.users
        )

    def place_restores(self) -> None:
        """Float outputs of int8 convolutions keep the op's channels-last layout through
        layout-free readers (int8 nodes, ReLU, pooling, a flatten to 2-D); a :class:`Restore`
        stands before every other reader (the model's outputs included)."""
        for n in list(self.graph.nodes):
            m = self.module_of(n)
            if isinstance(m, Int8Conv) and m.out is None:
                m.restore = False
                self.restore_after(n)

    def restore_after(self, n: torch.fx.Node) -> None:
        users = list(n.users)
        outside = [u for u in users if not self.layout_free(u, n)]
        if outside:
            name = self.add_module(n, Restore(self.region))
            with self.graph.inserting_after(n):
                r = self.graph.call_module(name, (n,))
            n.replace_all_uses_with(r, delete_user_cb=lambda u: u in outside)
        for u in users:
            if u not in outside and self.keeps_layout(u):
                self.restore_after(u)

    def layout_free(self, u: torch.fx.Node, n: torch.fx.Node) -> bool:
        if isinstance(self.module_of(u), (_Int8Node, Quantize)):
            return True
        if not self.only_input(u, n):
            return False
        return self.keeps_layout(u) or self.flattens(u)

    def keeps_layout(self, u: torch.fx.Node) -> bool:
        """An op whose float output has its input's layout, values independent of it."""
        m = self.module(u)
        if m is not None:
            return isinstance(m, _LAYOUT_KEEPING) and not getattr(m, "return_indices", False)
        return (self.is_relu(u) or self.is_pool(u)) and u.op in ("call_function", "call_method")

    def flattens(self, u: torch.fx.Node) -> bool:
        """A flatten of everything after the batch dimension: a 2-D result, contiguous either way."""
        m = self.module(u)
        if m is not None:
            return type(m) is nn.Flatten and m.start_dim == 1 and m.end_dim == -1
        start = u.args[1] if len(u.args) > 1 else u.kwargs.get("start_dim", 0)
        end = u.args[2] if len(u.args) > 2 else u.kwargs.get("end_dim", -1)
        flat = (u.op == "call_function" and u.target is torch.flatten) or (
            u.op == "call_method" and u.target == "flatten"
        )
        return bool(flat and start == 1 and end == -1)

    def describe(self, where: str, codes_in: bool, out: Grid | None, relu: bool, extra: str = "") -> None:
        post = extra + ("+relu" if relu else "")
        self.report.layers[where] = f"{'uint8' if codes_in else 'float32'} -> {'uint8' if out else 'float32'}{post}"


class _Recorder(torch.fx.Interpreter):
    """Runs a graph, feeding the value of each observed node to its observer."""

    def __init__(self, gm: torch.fx.GraphModule, observers: dict[torch.fx.Node, MinMaxObserver]) -> None:
        super().__init__(gm)
        self.observers = observers

    def run_node(self, n: torch.fx.Node) -> Any:
        value = super().run_node(n)
        observer = self.observers.get(n)
        if observer is not None and isinstance(value, torch.Tensor) and value.is_floating_point():
            observer.update(value)
        return value


def _uses(user: torch.fx.Node, n: torch.fx.Node) -> int:
    """How many times ``n`` appears in ``user``'s arguments."""
    count = 0

    def seen(a: torch.fx.Node) -> torch.fx.Node:
        nonlocal count
        count += a is n
        return a

    torch.fx.node.map_arg((user.args, user.kwargs), seen)
    return count


# -- the entry point -----------------------------------------------------------------------
def optimize_int8(
    model: nn.Module, *example_inputs: Any, min_sqnr_db: float = MIN_SQNR_DB, output_grids: bool = True
) -> nn.Module:
    """``model`` (a quantized model from ``quantize`` or ``load_quantized``) with activations kept
    uint8 between its static int8 layers, ReLU and residual adds fused (module docstring).

    ``model`` is not changed (the result shares its quantized modules, so it holds one more
    packed copy of the int8 weights).  The result is a ``torch.fx.GraphModule`` where the whole
    model traces, else a shallow copy of ``model`` whose traceable children are rewritten; its
    ``int8_report`` (:class:`Int8Report`) says what runs in uint8 and what was left and why.
    Checked on ``example_inputs``: each floating-point output within ``min_sqnr_db`` of the
    unrewritten model's, same shapes and dtypes, else :class:`ValidationFailed`.

    ``output_grids``: an int8 layer whose output only average pools read (through ReLU,
    max-pooling, views: a CNN's last convolution before its global pool) or only a fused residual
    add as its shortcut (a downsampling convolution) emits uint8 codes on an output grid of its
    own, the min/max of that output on ``example_inputs`` (``int8_report.output_grids``; a part
    traced on its own gets its inputs from one more run of ``model``); False keeps such outputs
    float32.  That rounds a value the unrewritten model keeps float, so ``example_inputs`` should
    cover the inputs' range (a calibration batch, not a single sample).
    """
    report = Int8Report()
    inputs = _ModuleInputs(model, example_inputs) if output_grids else None
    optimized = _optimize(model, "", report, inputs)
    if optimized is model:
        optimized = copy.copy(model)  # a distinct object to carry the report; nothing else changes
        optimized._modules = dict(model._modules)
    hint = ""
    if report.output_grids:
        names = ", ".join(report.output_grids)
        hint = f"; own output grids calibrated on the example for {names} (output_grids=False keeps them float)"
    report.sqnr_db = _check(model, optimized, example_inputs, min_sqnr_db, hint)
    optimized.__dict__["int8_report"] = report  # a plain attribute, not a module or buffer
    return optimized


def _has_static_layers(module: nn.Module) -> bool:
    return any(isinstance(m, QuantizedModule) and m.mode == "static" for m in module.modules())


class _ModuleInputs:
    """The positional inputs each call of a part of ``model`` gets on the example inputs (a
    forward pre-hook during one run of ``model``; calls with keyword arguments are left out)."""

    def __init__(self, model: nn.Module, example_inputs: tuple[Any, ...]) -> None:
        self.model = model
        self.example_inputs = example_inputs

    def __call__(self, module: nn.Module) -> list[tuple[Any, ...]]:
        if module is self.model:
            return [tuple(self.example_inputs)] if self.example_inputs else []
        calls: list[tuple[Any, ...]] = []

        def seen(_: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if not kwargs:
                calls.append(args)

        handle = module.register_forward_pre_hook(seen, with_kwargs=True)
        try:
            with torch.inference_mode():
                self.model(*self.example_inputs)
        finally:
            handle.remove()
        return calls


def _optimize(module: nn.Module, prefix: str, report: Int8Report, inputs: _ModuleInputs | None = None) -> nn.Module:
    """``module`` rewritten (a GraphModule), or with its children rewritten where it does not trace."""
    if isinstance(module, QuantizedModule) or not _has_static_layers(module):
        return module
    try:
        graph = _Tracer().trace(module)
    except Exception as e:  # torch.fx raises many types (TraceError, TypeError, ...): any is a refusal
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        report.reasons.append(
            f"{prefix or 'model'}: not traceable by torch.fx ({type(e).__name__}: {first[:200]}); "
            "left as it is, its children rewritten one by one"
        )
        return _children_rewritten(module, prefix, report, inputs)
    gm = torch.fx.GraphModule(module, graph, class_name=type(module).__name__ + "Int8")
    gm.train(module.training)
    _Rewrite(gm, prefix, report, None if inputs is None else lambda: inputs(module)).run()
    return gm


def _children_rewritten(module: nn.Module, prefix: str, report: Int8Report, inputs: _ModuleInputs | None) -> nn.Module:
    children = {}
    for name, child in module.named_children():
        new = _optimize(child, f"{prefix}.{name}" if prefix else name, report, inputs)
        if new is not child:
            children[name] = new
    if not children:
        return module
    shallow = copy.copy(module)
    shallow._modules = {**module._modules, **children}
    return shallow


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)


def _check(
    model: nn.Module, optimized: nn.Module, inputs: tuple[Any, ...], min_sqnr_db: float, hint: str = ""
) -> float:
    """The lowest output SQNR of ``optimized`` against ``model`` on ``inputs``
    (:class:`ValidationFailed` below ``min_sqnr_db``, its message ending in ``hint``)."""
    if not inputs:
        raise ValidationFailed("optimize_int8: no example inputs to check the rewritten model on")
    with torch.inference_mode():
        expected = list(_tensors(model(*inputs)))
        got = list(_tensors(optimized(*inputs)))
    if len(expected) != len(got):
        raise ValidationFailed(
            f"optimize_int8: the rewritten model returns {len(got)} tensors, the model {len(expected)}"
        )
    worst = math.inf
    for i, (e, g) in enumerate(zip(expected, got, strict=True)):
        if e.shape != g.shape or e.dtype != g.dtype:
            raise ValidationFailed(
                f"optimize_int8: output {i} is {g.dtype} {tuple(g.shape)}, the model's {e.dtype} {tuple(e.shape)}"
            )
        if not e.is_floating_point():
            if not torch.equal(e, g):
                raise ValidationFailed(f"optimize_int8: output {i} (integer) differs from the model's")
            continue
        db = float(sqnr_db(e, g))
        worst = min(worst, db)
        if not db >= min_sqnr_db:
            raise ValidationFailed(
                f"optimize_int8: output {i} is {db:.1f} dB from the unrewritten model's "
                f"(at least {min_sqnr_db} dB needed){hint}"
            )
    return worst
