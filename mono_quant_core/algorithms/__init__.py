"""What a run does beyond round-to-nearest (docs/quantization-math.md, "Algorithms").

``RunAlgorithms`` is the one place :func:`mono_quant_core.quantizer.run_quantize` asks: before
calibration it smooths the float model (SmoothQuant), and for each layer it builds the quantized
twin and then rounds its weights with GPTQ or HQQ and corrects its bias.  Each layer's own settings
(``QuantConfig.layer_config``) say which of these apply to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from ..config import QuantConfig
from ..modules.attention import QuantizedMultiheadAttention, as_linear, float_projections
from ..modules.base import QuantizedModule
from ..progress import Stepper
from ..report import LayerReport
from ..sequential import BlockViews, View

#: The phase SmoothQuant's activation ranges are measured in (one unit per calibration sample).
SMOOTH_PHASE = "smooth"


def uses_samples(configs: dict[str, QuantConfig | None]) -> list[str]:
    """What in these layers' settings needs calibration samples besides static mode, said for a user."""
    needs = []
    layers = [c for c in configs.values() if c is not None]
    if any(c.algorithm == "gptq" for c in layers):
        needs.append("algorithm gptq")
    if any(c.smoothquant_alpha is not None for c in layers):
        needs.append("smoothquant_alpha")
    if any(c.bias_correction for c in layers):
        needs.append("bias_correction")
    return needs


def smoothed_layers(configs: dict[str, QuantConfig | None]) -> dict[str, float]:
    """``{name: alpha}`` of the layers SmoothQuant applies to (Linear layers only, checked when smoothing)."""
    return {n: float(c.smoothquant_alpha) for n, c in configs.items() if c is not None and c.smoothquant_alpha}


class RunAlgorithms:
    """The algorithms of one run: smoothing before calibration, then each layer's build."""

    def __init__(self, configs: dict[str, QuantConfig | None], samples: Sequence[Any], stepper: Stepper) -> None:
        self.configs = configs
        self.samples = samples  # the calibration samples (validation's are held out)
        self.stepper = stepper
        self.smoothing: Any = None  # smoothquant.Smoothing once smooth() ran

    @property
    def rebuilds_layers(self) -> bool:
        """Whether a layer's twin depends on more than the layer itself (a prepared RTN twin will not do)."""
        return any(
            c is not None and (c.algorithm != "rtn" or c.bias_correction or c.smoothquant_alpha is not None)
            for c in self.configs.values()
        )

    @property
    def captures_inputs(self) -> bool:
        """Whether some layer's build runs the calibration samples (GPTQ, bias correction)."""
        return any(c is not None and (c.algorithm == "gptq" or c.bias_correction) for c in self.configs.values())

    def smooth(self, model: nn.Module) -> nn.Module:
        """The float model to quantize: ``model`` itself, or a smoothed shallow clone (SmoothQuant)."""
        alphas = smoothed_layers(self.configs)
        if not alphas:
            return model
        from .smoothquant import smooth

        self.stepper.begin(SMOOTH_PHASE, f"measuring activation ranges for SmoothQuant on {len(self.samples)} samples")
        self.smoothing = smooth(model, alphas, self.samples, self.stepper.span(), self.stepper.cancel_token)
        return self.smoothing.model

    def build(
        self,
        name: str,
        float_module: nn.Module,
        layer_config: QuantConfig,
        qparams: tuple[torch.Tensor, torch.Tensor] | None,
        reference: nn.Module,
        qmodel: nn.Module,
        blocks: BlockViews | None = None,
    ) -> QuantizedModule:
        """The quantized twin of layer ``name``: built, rounded by its algorithm, bias corrected.

        ``qmodel`` holds the layers before this one already quantized (GPTQ sees their outputs);
        ``reference`` is the float model (bias correction measures on its inputs).  With
        ``blocks`` (a run going block by block), a layer inside a block sees its inputs through
        a replay of its block rather than the whole model.
        """

        def view(model: nn.Module, quantized: bool) -> View:
            found = blocks.view(name, quantized) if blocks is not None else None
            return found if found is not None else (model, name, self.samples)

        from ..quantizer import build_layer

        qmodule = build_layer(float_module, layer_config, qparams)
        if self.smoothing is not None:
            self.smoothing.apply(name, qmodule)
        if qmodule.spec is not None and layer_config.algorithm != "rtn":
            if isinstance(qmodule, QuantizedMultiheadAttention):
                done = self._round_attention(qmodule, float_module, layer_config, view(qmodel, True))
            elif layer_config.algorithm == "gptq":
                from . import gptq
                from .capture import layer_inputs

                inputs = layer_inputs(*view(qmodel, True), self.stepper.cancel_token)
                done = gptq.quantize_module(qmodule, float_module, inputs, layer_config)
            else:
                from . import hqq

                done = hqq.quantize_module(qmodule, float_module, layer_config)
            qmodule.algorithm = layer_config.algorithm if done else "rtn"
        if layer_config.bias_correction:
            from . import bias_correction
            from .capture import layer_inputs

            inputs = layer_inputs(*view(reference, False), self.stepper.cancel_token)
            qmodule.bias_corrected = bias_correction.correct(qmodule, float_module, inputs)
        return qmodule

    def _round_attention(
        self,
        qmodule: QuantizedMultiheadAttention,
        float_module: nn.Module,
        layer_config: QuantConfig,
        where: View,
    ) -> bool:
        """GPTQ or HQQ on each projection of an attention; whether every projection took it.

        GPTQ keeps its sequential rule inside the layer: q/k/v see the attention's inputs in the
        part-quantized model, and the output projection sees what the rounded q/k/v produce.
        """
        mha = cast(nn.MultiheadAttention, float_module)
        floats = {n: as_linear(w, b) for n, (w, b) in float_projections(mha).items()}
        if layer_config.algorithm == "hqq":
            from . import hqq

            return all([hqq.quantize_module(p, floats[n], layer_config) for n, p in qmodule.projections()])
        from . import gptq
        from .capture import projection_inputs

        done = []
        for n, projection in qmodule.projections():
            rounded = {"q_proj", "k_proj", "v_proj"} if n == "out_proj" else set()

            def project(which: str, x: torch.Tensor, rounded: set[str] = rounded) -> torch.Tensor:
                return qmodule.project(which, x) if which in rounded else floats[which](x)

            model, name, samples = where
            inputs = projection_inputs(model, name, n, samples, project, self.stepper.cancel_token)
            done.append(gptq.quantize_module(projection, floats[n], inputs, layer_config))
        return all(done)

    def describe(self, name: str, qmodule: QuantizedModule, layer: LayerReport) -> None:
        """What the algorithms did to layer ``name``, into its report."""
        layer.algorithm = getattr(qmodule, "algorithm", "rtn")
        layer.bias_corrected = bool(getattr(qmodule, "bias_corrected", False))
        if self.smoothing is not None:
            layer.smoothquant = self.smoothing.where.get(name)
