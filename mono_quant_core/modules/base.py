"""QuantizedModule: the base of every quantized replacement (docs/architecture.md, "Quantized modules").

A subclass names its quantized weights (``weight``, or ``weight_ih_l0``, ...)
and stores each as registered buffers: ``<stem>`` (int8, or uint8 packed
int4, or fp16/bf16 for the cast modes), ``<stem>_scale`` (float32) and
``<stem>_zero_point`` (int8, asymmetric only).  Static mode adds
``input_scale`` (float32 [1]) and ``input_zero_point`` (int32 [1]).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ClassVar, Self, cast

import torch
from torch import nn

from ..config import QuantConfig
from ..errors import ConfigError, QuantizedFileError
from ..tensor import (
    ACT_QMAX,
    ACT_QMIN,
    QuantizedTensor,
    QuantSpec,
    activation_qparams,
    cast_dtype,
    code_range,
    dequantize_weight,
    dequantize_weight_into,
    fake_quantize,
    qparam_shape,
    quantize_weight_measured,
    sqnr_sums,
    stored_dtype,
    stored_shape,
)

#: ``kernel`` before the first forward.
PENDING = "pending"
#: ``__dict__`` key: the stem whose codes only the kernel's pack holds (its buffer is None meanwhile).
_IN_PACK = "_codes_in_pack"
#: ``__dict__`` key: set once the layer's kernel was released and packed again (validation of a
#: model larger than memory does it at every call): its codes then stay in their buffer.
_REPACKING = "_repacking"


#: Inside :func:`layout_only`.
_LAYOUT_ONLY: ContextVar[bool] = ContextVar("mono_quant_layout_only", default=False)


@contextmanager
def layout_only() -> Iterator[None]:
    """State dicts taken inside give codes that only a kernel's pack holds as uninitialised tensors
    of their shape and dtype, not unpacked: for sizes and file layouts, which never read the data
    (the size estimate at the end of validation would otherwise unpack the whole model at once)."""
    token = _LAYOUT_ONLY.set(True)
    try:
        yield
    finally:
        _LAYOUT_ONLY.reset(token)


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # inference tensors have no version counter
        return -1


def _refs_of_a_dict_value() -> int:
    """What ``sys.getrefcount(d[k])`` says of a value that only dict ``d`` holds (the count is
    the interpreter's own business: measured, not assumed)."""
    d = {"k": object()}
    return sys.getrefcount(d["k"])


_DICT_ONLY_REFS = _refs_of_a_dict_value()


def _owns_storage(store: dict[str, Any], name: str) -> bool:
    """Whether freeing ``store[name]`` frees its bytes: no other Python reference to the tensor,
    not a view, no other tensor over its storage."""
    if sys.getrefcount(store[name]) > _DICT_ONLY_REFS:
        return False
    t = store[name]
    if t._base is not None:
        return False
    storage = t.untyped_storage()
    if storage.nbytes() != t.numel() * t.element_size():
        return False
    use_count = getattr(torch._C, "_storage_Use_Count", None)
    return use_count is None or use_count(storage._cdata) <= 2  # the tensor's and ``storage``'s


def _weight_and_bias(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A float Linear / Conv's ``weight`` and ``bias`` (nn.Module.__getattr__ is typed Tensor | Module)."""
    return cast(torch.Tensor, module.weight), cast("torch.Tensor | None", module.bias)


class QuantizedModule(nn.Module):
    """Common state and behaviour: storage, metadata, dtype-safe ``_apply``, kernel cache."""

    #: The float module class this replaces (``nn.Linear``, ...).
    float_type: ClassVar[type[nn.Module]]
    # Static mode only: registered in _init_input_qparams (declared for type checkers).
    input_scale: torch.Tensor
    input_zero_point: torch.Tensor

    def __init__(
        self, dtype: str, mode: str, scheme: str | None, granularity: str | None, group_size: int | None, axis: int = 0
    ) -> None:
        super().__init__()
        self.qdtype = dtype
        self.mode = mode
        self.cast_dtype = cast_dtype(dtype)
        self.spec: QuantSpec | None = None
        if self.cast_dtype is None:
            if granularity is None:  # QuantSpec rejects it too; said here, before it is built
                raise ConfigError(f"granularity: {dtype} weights need one (per-tensor, per-channel or per-group)")
            self.spec = QuantSpec(dtype, scheme == "symmetric", granularity, axis, int(group_size or 128))
        self.weight_shapes: dict[str, tuple[int, ...]] = {}
        #: ``{stem: (Σw², Σ(w−ŵ)²)}`` measured while quantizing (for the weight SQNR;
        #: empty for modules built from a file).
        self.weight_error_sums: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        #: How the weights were rounded (``rtn``, ``gptq``, ``hqq``) and whether bias correction
        #: changed the bias: recorded in the file's layer record.
        self.algorithm = "rtn"
        self.bias_corrected = False
        self.kernel = PENDING
        self._kernel_key: tuple | None = None
        self._kernel_state: Any = None

    # -- construction -------------------------------------------------------------
    @classmethod
    def _settings(cls, config: QuantConfig) -> dict[str, Any]:
        cast = config.is_cast
        return {
            "dtype": config.dtype,
            "mode": "weight-only" if cast else config.mode,
            "scheme": None if cast else config.scheme,
            "granularity": None if cast else config.granularity,
            "group_size": None if cast or config.granularity != "per-group" else config.group_size,
        }

    @classmethod
    def _settings_from_meta(cls, meta: dict[str, Any]) -> dict[str, Any]:
        expected = cls.float_type.__name__
        if meta.get("type") not in (expected, None):
            raise QuantizedFileError(f"layer record type: {meta.get('type')!r} cannot load into {cls.__name__}")
        try:
            config = QuantConfig(
                dtype=meta["dtype"],
                mode=meta["mode"],
                scheme=meta.get("scheme") or "symmetric",
                granularity=meta.get("granularity") or "per-channel",
                group_size=int(meta.get("group_size") or 128),
            )
        except KeyError as exc:
            raise QuantizedFileError(f"layer record: field {exc.args[0]!r} is missing") from None
        except ConfigError as exc:
            raise QuantizedFileError(f"layer record: {exc}") from None
        return cls._settings(config)

    def _check_shape(self, stem: str, expected: tuple[int, ...], meta: dict[str, Any]) -> None:
        recorded = (
            meta.get("weights", {}).get(stem)
            if "weights" in meta
            else (meta.get("shape") if stem == "weight" else None)
        )
        if recorded is not None and tuple(recorded) != tuple(expected):
            raise QuantizedFileError(
                f"layer record shape: {stem} is {tuple(recorded)} in the file but "
                f"{tuple(expected)} in the model's {self.float_type.__name__}"
            )

    def _store_weight(self, stem: str, w: torch.Tensor) -> None:
        """Quantize (or cast) float weight ``w`` into the buffers of ``stem``."""
        self.weight_shapes[stem] = tuple(w.shape)
        w = w.detach()
        if self.cast_dtype is not None:
            cast = w.to(self.cast_dtype, copy=True)
            self.register_buffer(stem, cast)
            self.weight_error_sums[stem] = sqnr_sums(w, cast)
            return
        spec = self.spec
        assert spec is not None  # __init__ builds a spec whenever cast_dtype is None
        qt, self.weight_error_sums[stem] = quantize_weight_measured(w, spec)
        self.register_buffer(stem, qt.data)
        self.register_buffer(f"{stem}_scale", qt.scale)
        if qt.zero_point is not None:
            self.register_buffer(f"{stem}_zero_point", qt.zero_point)

    def set_weight(self, stem: str, qt: QuantizedTensor, reference: torch.Tensor) -> None:
        """Store ``qt`` (codes and qparams an algorithm chose, in the stored form of this layer's
        spec) as weight ``stem``, in place of round-to-nearest's; ``reference``: the float weight
        it approximates, for the weight SQNR."""
        spec = self.spec
        if spec is None:
            raise ConfigError(f"{stem}: a {self.qdtype} cast has no codes to set")
        shape = self.weight_shapes[stem]
        if tuple(qt.data.shape) != tuple(stored_shape(shape, spec)) or qt.data.dtype != stored_dtype(spec):
            raise ConfigError(f"{stem}: codes of shape {tuple(qt.data.shape)} do not fit a {shape} {spec.dtype} weight")
        self.register_buffer(stem, qt.data)
        self.register_buffer(f"{stem}_scale", qt.scale.to(torch.float32))
        if not spec.symmetric:
            if qt.zero_point is None:
                raise ConfigError(f"{stem}: an asymmetric weight needs a zero point")
            self.register_buffer(f"{stem}_zero_point", qt.zero_point.to(torch.int8))
        self.weight_error_sums[stem] = sqnr_sums(reference.detach().float(), self.dequantized_weight(stem))
        self._kernel_key = None

    def _take_weight_and_bias(self, module: nn.Module) -> Self:
        """Quantize ``module.weight``, keep its bias, add input qparams (Linear and Conv)."""
        weight, bias = _weight_and_bias(module)
        self._store_weight("weight", weight)
        self._store_float("bias", bias)
        self._init_input_qparams(weight.device)
        return self

    def _empty_weight_and_bias(self, meta: dict[str, Any], module: nn.Module) -> Self:
        """Empty buffers shaped like ``module``'s weight and bias, checked against ``meta``."""
        weight, bias = _weight_and_bias(module)
        shape = tuple(weight.shape)
        self._check_shape("weight", shape, meta)
        self._empty_weight("weight", shape, weight.device)
        if bias is None and meta.get("bias_corrected"):
            # Bias correction gave the layer a bias its float module does not have.
            width = int(getattr(module, "out_features", None) or getattr(module, "out_channels", 0) or shape[0])
            bias = torch.empty(width, dtype=weight.dtype, device=weight.device)
        self._empty_float("bias", bias)
        self._init_input_qparams(weight.device)
        return self

    def _empty_weight(self, stem: str, shape: tuple[int, ...], device: torch.device) -> None:
        """Buffers of ``stem`` with the right shapes and dtypes, for ``load_state_dict``."""
        self.weight_shapes[stem] = tuple(int(d) for d in shape)
        if self.cast_dtype is not None:
            self.register_buffer(stem, torch.empty(shape, dtype=self.cast_dtype, device=device))
            return
        spec = self.spec
        assert spec is not None  # __init__ builds a spec whenever cast_dtype is None
        self.register_buffer(stem, torch.empty(stored_shape(shape, spec), dtype=stored_dtype(spec), device=device))
        pshape = qparam_shape(shape, spec)
        self.register_buffer(f"{stem}_scale", torch.ones(pshape, dtype=torch.float32, device=device))
        if not spec.symmetric:
            self.register_buffer(f"{stem}_zero_point", torch.zeros(pshape, dtype=torch.int8, device=device))

    def _store_float(self, name: str, t: torch.Tensor | None) -> None:
        """A non-quantized tensor (bias): shares the float storage, or is cast in the cast modes."""
        if t is None:
            self.register_parameter(name, None)
            return
        if self.cast_dtype is not None:
            self.register_parameter(name, nn.Parameter(t.detach().to(self.cast_dtype, copy=True), requires_grad=False))
        else:
            self.register_parameter(name, nn.Parameter(t.detach(), requires_grad=t.requires_grad))

    def _empty_float(self, name: str, t: torch.Tensor | None) -> None:
        if t is None:
            self.register_parameter(name, None)
            return
        dtype = self.cast_dtype or t.dtype
        self.register_parameter(
            name, nn.Parameter(torch.empty(t.shape, dtype=dtype, device=t.device), requires_grad=False)
        )

    def _init_input_qparams(self, device: torch.device) -> None:
        if self.mode == "static":
            # NaN until set_input_qparams: weight_range_problems() reports it.
            self.register_buffer("input_scale", torch.full((1,), float("nan"), device=device))
            self.register_buffer("input_zero_point", torch.zeros(1, dtype=torch.int32, device=device))

    # -- the contract -------------------------------------------------------------------
    @classmethod
    def from_float(cls, module: nn.Module, config: QuantConfig) -> QuantizedModule:
        """The quantized replacement of ``module`` (which is never modified)."""
        raise NotImplementedError

    @classmethod
    def from_meta(cls, meta: dict[str, Any], float_module: nn.Module) -> QuantizedModule:
        """An empty replacement of ``float_module`` shaped by ``meta``, ready for ``load_state_dict``."""
        raise NotImplementedError

    def to_float(self) -> nn.Module:
        """A plain float32 module with the dequantized weights."""
        raise NotImplementedError

    def quant_meta(self) -> dict[str, Any]:
        """JSON-able record of how this layer is quantized (what ``from_meta`` needs)."""
        spec = self.spec
        stems = list(self.weight_shapes)
        meta: dict[str, Any] = {
            "type": self.float_type.__name__,
            "dtype": self.qdtype,
            "mode": self.mode,
            "scheme": None if spec is None else spec.scheme,
            "granularity": None if spec is None else spec.granularity,
            "axis": None if spec is None or spec.granularity != "per-channel" else spec.axis,
            "group_size": None if spec is None or spec.granularity != "per-group" else spec.group_size,
            "shape": list(self.weight_shapes[stems[0]]) if stems else [],
        }
        if len(stems) > 1:
            meta["weights"] = {stem: list(shape) for stem, shape in self.weight_shapes.items()}
        if self.algorithm != "rtn":
            meta["algorithm"] = self.algorithm
        if self.bias_corrected:
            meta["bias_corrected"] = True
        return meta

    def restore_notes(self, meta: dict[str, Any]) -> None:
        """Take back what ``quant_meta`` recorded beyond the layout (a loaded layer re-saves the same record)."""
        self.algorithm = str(meta.get("algorithm") or "rtn")
        self.bias_corrected = bool(meta.get("bias_corrected", False))

    def dequantized_weight(self, stem: str = "weight", dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """One weight back in float (``dtype``), from its stored form."""
        data = self.stored(stem)
        if self.spec is None:
            return data.to(dtype)
        w = dequantize_weight(
            data,
            getattr(self, f"{stem}_scale"),
            getattr(self, f"{stem}_zero_point", None),
            self.spec,
            self.weight_shapes[stem],
        )
        return w if dtype == torch.float32 else w.to(dtype)

    def dequantized_rows(
        self, stem: str, start: int, stop: int, dtype: torch.dtype = torch.float32, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Rows ``start:stop`` (output channels) of a weight in ``dtype``, without dequantizing the rest.

        ``out``: a contiguous ``dtype`` tensor of the rows' shape (any shape with
        as many values) to write them into instead of a new tensor; returned.
        """
        shape = self.weight_shapes[stem]
        data = getattr(self, stem)[start:stop]
        if self.spec is None:
            return data.to(dtype) if out is None else out.view(data.shape).copy_(data)
        scale, zp = getattr(self, f"{stem}_scale"), getattr(self, f"{stem}_zero_point", None)
        if self.spec.granularity != "per-tensor":  # per-channel on axis 0, or per-group: rows lead
            scale = scale[start:stop]
            zp = None if zp is None else zp[start:stop]
        rows_shape = (data.shape[0], *shape[1:])
        if out is not None and dtype == torch.float32:
            return dequantize_weight_into(data, scale, zp, self.spec, rows_shape, out)
        w = dequantize_weight(data, scale, zp, self.spec, rows_shape)
        w = w if dtype == torch.float32 else w.to(dtype)
        return w if out is None else out.view(rows_shape).copy_(w)

    def dequantized_weights(self) -> dict[str, torch.Tensor]:
        """Float32 weights keyed by the float module's parameter names."""
        return {stem: self.dequantized_weight(stem) for stem in self.weight_shapes}

    def weight_holders(self) -> list[tuple[QuantizedModule, str]]:
        """``(module, stem)`` of every quantized weight of this layer: its own stems here; a layer
        made of quantized children (attention) names theirs."""
        return [(self, stem) for stem in self.weight_shapes]

    def float_tensor(self, name: str, dtype: torch.dtype) -> torch.Tensor | None:
        """A non-quantized parameter (bias) in ``dtype``, or None."""
        t = getattr(self, name)
        return None if t is None else t.detach().to(dtype)

    def set_input_qparams(self, scale: torch.Tensor | float, zero_point: torch.Tensor | int) -> None:
        """Static mode: the calibrated per-tensor activation range (int8 [-128, 127])."""
        if self.mode != "static":
            raise ConfigError(f"mode: input quantization parameters need mode static, this layer is {self.mode}")
        device = self.input_scale.device
        self.input_scale = torch.as_tensor(scale, dtype=torch.float32).detach().reshape(1).to(device)
        self.input_zero_point = torch.as_tensor(zero_point).detach().reshape(1).to(device=device, dtype=torch.int32)

    def weight_range_problems(self) -> list[str]:
        """Empty when every code is inside its range and every scale is finite and positive."""
        problems = []
        for stem, shape in self.weight_shapes.items():
            data = self.stored(stem)
            if self.spec is None:
                if not bool(torch.isfinite(data).all()):
                    problems.append(f"{stem}: not finite after the {self.qdtype} cast (values beyond its range)")
                continue
            codes = code_range(data, self.spec, shape)
            if codes is not None and (codes[0] < self.spec.qmin or codes[1] > self.spec.qmax):
                problems.append(f"{stem}: codes outside [{self.spec.qmin}, {self.spec.qmax}]")
            scale = getattr(self, f"{stem}_scale")
            if not bool((torch.isfinite(scale) & (scale > 0)).all()):
                problems.append(f"{stem}_scale: not finite and positive")
            zp = getattr(self, f"{stem}_zero_point", None)
            if zp is not None and zp.numel() and (int(zp.min()) < self.spec.qmin or int(zp.max()) > self.spec.qmax):
                problems.append(f"{stem}_zero_point: outside [{self.spec.qmin}, {self.spec.qmax}]")
        if self.mode == "static" and not self.cast_dtype:
            s, zp = self.input_scale, self.input_zero_point
            if not bool((torch.isfinite(s) & (s > 0)).all()):
                problems.append("input_scale: not finite and positive (calibration did not set it)")
            if int(zp.min()) < ACT_QMIN or int(zp.max()) > ACT_QMAX:
                problems.append(f"input_zero_point: outside [{ACT_QMIN}, {ACT_QMAX}]")
        return problems

    def quantized_bytes(self) -> int:
        """Bytes of every tensor in this module's state dict."""
        return sum(t.numel() * t.element_size() for t in self.state_dict().values())

    # -- activations ------------------------------------------------------------------
    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Static: ``x`` on the calibrated int8 grid; dynamic: on this batch's grid; else ``x``."""
        if self.mode == "weight-only" or not x.is_floating_point() or x.numel() == 0:
            return x
        if self.mode == "static":
            return fake_quantize(x, self.input_scale, self.input_zero_point)
        return fake_quantize(x, *activation_qparams(x))

    # -- kernels --------------------------------------------------------------------------
    def _state_key(self) -> tuple:
        tensors = [t for t in (*self._buffers.values(), *self._parameters.values()) if t is not None]
        return tuple((t.data_ptr(), _version(t), t.device) for t in tensors)

    def _cached(self, build: Callable[[], tuple[str, Any]]) -> Any:
        """Kernel state built by ``build() -> (name, state)``, rebuilt when any tensor changed;
        after :meth:`release_kernel` the kernel chosen before is packed again, without its probe."""
        key = self._state_key()
        if key != self._kernel_key:
            released = self.__dict__.pop("_released_kernel", None)
            if released is not None and released[0] == key:
                _, self.kernel, kernel = released
                self._kernel_state = (kernel, kernel.pack(self))
                self.__dict__[_REPACKING] = True
            else:
                self.kernel, self._kernel_state = build()
            self._kernel_key = key
        return self._kernel_state

    def release_kernel(self) -> None:
        """Drop the kernel's packed weights (a copy of the codes in the kernel's layout): the next
        forward packs them again with the same kernel.  Validation of a model larger than memory
        releases each layer's after its call, so that the packs never add up to a second model."""
        self._restore_codes()
        state = self._kernel_state
        if isinstance(state, tuple) and len(state) == 2 and state[0] is not None and self._kernel_key is not None:
            self.__dict__["_released_kernel"] = (self._kernel_key, self.kernel, state[0])
        self._kernel_key, self._kernel_state = None, None

    # -- codes held by the kernel's pack alone ---------------------------------------------
    # fbgemm's dynamic int8 pack is a full copy of a Linear's codes in its own layout, from which
    # ``unpack`` gives them back exactly.  Once a forward has packed them the layer lets the pack
    # hold them alone (its buffer is None) and brings them back from it whenever anything reads
    # the buffer, saves, copies, moves or loads the layer: a dynamic int8 model that has run costs
    # its int8 bytes once, not twice (docs/architecture.md, "Kernels").
    def _drop_codes(self, stem: str) -> None:
        """Free buffer ``stem`` when the current kernel state holds its codes and nothing else
        references them (a tied or viewed buffer stays: dropping it would free nothing)."""
        if self._buffers.get(stem) is None or self.__dict__.get(_REPACKING) or not _owns_storage(self._buffers, stem):
            return
        self._swap_codes(stem, None)
        self.__dict__[_IN_PACK] = stem

    def _swap_codes(self, stem: str, codes: torch.Tensor | None) -> None:
        """Buffer ``stem`` set to ``codes`` (the same codes, or None while the pack holds them),
        a kernel state valid before still valid after (its key follows the buffer)."""
        valid = self._kernel_key is not None and self._kernel_key == self._state_key()
        self._buffers[stem] = codes
        if valid:
            self._kernel_key = self._state_key()

    def _packed_codes(self) -> tuple[str, torch.Tensor] | None:
        """``(stem, codes)`` unpacked from the kernel state when a buffer was dropped, else None."""
        stem = self.__dict__.get(_IN_PACK)
        if stem is None:
            return None
        if self._buffers.get(stem) is not None:  # assigned since: the pack no longer speaks for it
            del self.__dict__[_IN_PACK]
            return None
        if _LAYOUT_ONLY.get() and self.spec is not None:
            shape, device = (
                stored_shape(self.weight_shapes[stem], self.spec),
                cast(torch.Tensor, getattr(self, f"{stem}_scale")).device,
            )
            return stem, torch.empty(shape, dtype=stored_dtype(self.spec), device=device)
        kernel, state = self._kernel_state
        with torch.inference_mode(False), torch.no_grad():
            return stem, kernel.unpack(state)

    def stored(self, stem: str) -> torch.Tensor:
        """Weight ``stem`` as stored (codes, or the cast weight), for reading once: codes that only
        the kernel's pack holds are unpacked for the caller and not put back into the layer (a
        pass over a whole model, such as its histograms, would otherwise hold every layer's
        codes again beside its pack)."""
        found = self._packed_codes() if self.__dict__.get(_IN_PACK) == stem else None
        return found[1] if found is not None else cast(torch.Tensor, getattr(self, stem))

    def _restore_codes(self) -> None:
        """Put dropped codes back into their buffer (the kernel state stays valid for them)."""
        found = self._packed_codes()
        if found is None:
            return
        stem, codes = found
        self._swap_codes(stem, codes)
        del self.__dict__[_IN_PACK]

    def __getattr__(self, name: str) -> Any:
        if name == self.__dict__.get(_IN_PACK):
            self._restore_codes()
        return super().__getattr__(name)

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        found = self._packed_codes()
        if found is None:
            super()._save_to_state_dict(destination, prefix, keep_vars)
            return
        stem, codes = found
        self._buffers[stem] = codes  # in its own slot, so that the keys keep their order
        try:
            super()._save_to_state_dict(destination, prefix, keep_vars)
        finally:
            self._buffers[stem] = None

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        self._restore_codes()
        super()._load_from_state_dict(state_dict, prefix, *args)

    def _fixed_dtype_names(self) -> set[str]:
        names = {f"{stem}_scale" for stem in self.weight_shapes} | {"input_scale"}
        if self.cast_dtype is not None:
            names |= set(self.weight_shapes) | set(self._parameters)
        return names

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Self:
        # Scales stay float32 and cast weights keep their dtype under .half() /
        # .to(dtype): only their device follows.  They are taken out of the dicts
        # so that super()._apply never converts them (no rounding, no copy).
        self._restore_codes()
        fixed = self._fixed_dtype_names()
        # Tensors and Parameters: dict is invariant, so one value type for both stores is Any.
        stores: tuple[dict[str, Any], ...] = (self._buffers, self._parameters)
        held: dict[str, tuple[dict[str, Any], torch.Tensor]] = {}
        orders: dict[int, list[str]] = {}
        for store in stores:
            orders[id(store)] = list(store)
            for name in list(store):
                if name in fixed and store[name] is not None:
                    held[name] = (store, store.pop(name))
        try:
            super()._apply(fn, recurse)
            for name, (store, t) in held.items():
                probe = fn(torch.empty(0, dtype=t.dtype, device=t.device))
                moved = fn(t) if probe.dtype == t.dtype else t.to(device=probe.device)
                if isinstance(t, nn.Parameter) and not isinstance(moved, nn.Parameter):
                    moved = nn.Parameter(moved, requires_grad=t.requires_grad)
                held[name] = (store, moved)
        finally:
            for store in stores:
                current = dict(store)
                current.update({n: t for n, (s, t) in held.items() if s is store})
                store.clear()
                for name in orders[id(store)]:
                    store[name] = current[name]
        return self

    def __getstate__(self) -> dict[str, Any]:
        self._restore_codes()  # a copy or pickle takes the codes (and copy.copy the buffer dict)
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state["_kernel_key"], state["_kernel_state"] = None, None
        state["kernel"] = PENDING
        state.pop(_REPACKING, None)
        return state

    def extra_repr(self) -> str:
        if self.spec is None:
            return f"dtype={self.qdtype}, kernel={self.kernel}"
        return (
            f"dtype={self.qdtype}, mode={self.mode}, scheme={self.spec.scheme}, "
            f"granularity={self.spec.granularity}, kernel={self.kernel}"
        )
