"""Static calibration, GPTQ and bias correction block by block on a lazily built model.

A model built without its weights that is a chain of repeated blocks runs its calibration
samples one block at a time (mono_quant_core/sequential.py): each block is read once for the
pass over all samples rather than once per sample (and, for GPTQ, once per sample per layer).
Results equal the in-memory path's bit for bit; a model that does not split so runs as before
and the log says why.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_lazy_model import SCRIPT

from mono_quant_core import QuantConfig, open_model, quantize, save_quantized
from mono_quant_core.errors import CalibrationError, Cancelled
from mono_quant_core.loading.lazy_model import lazy_weights
from mono_quant_core.progress import CancelToken

GPTQ = QuantConfig(dtype="int4", mode="weight-only", granularity="per-group", group_size=16, algorithm="gptq")
MODES = {
    "static": QuantConfig(mode="static"),
    "gptq": GPTQ,
    "static-bias-correction": QuantConfig(mode="static", bias_correction=True),
    "gptq-bias-correction": QuantConfig(
        dtype="int4", mode="weight-only", granularity="per-group", group_size=16, algorithm="gptq", bias_correction=True
    ),
}

#: Models that do not split into blocks, and why the log says so.
NOT_CHAINED = """
import torch
from torch import nn


def blocks(width):
    return nn.ModuleList(nn.Sequential(nn.Linear(width, width), nn.ReLU()) for _ in range(3))


class Twice(nn.Module):  # every block runs twice per forward
    def __init__(self, width=16):
        super().__init__()
        self.blocks = blocks(width)
        self.head = nn.Linear(width, 4)

    def forward(self, x):
        for _ in range(2):
            for block in self.blocks:
                x = block(x)
        return self.head(x)


class Between(nn.Module):  # a quantized layer runs between two blocks
    def __init__(self, width=16):
        super().__init__()
        self.blocks = blocks(width)
        self.mix = nn.Linear(width, width)

    def forward(self, x):
        x = self.blocks[0](x)
        x = self.mix(x)
        for block in self.blocks[1:]:
            x = block(x)
        return x


class ReadsBlocks(nn.Module):  # the forward reads attributes of its blocks and of an outside module
    def __init__(self, width=16):
        super().__init__()
        self.embed = nn.Linear(width, width)
        self.blocks = blocks(width)
        for block in self.blocks:
            block.gain = 0.5

    def forward(self, x):
        x = self.embed(x) * self.embed.out_features / 16
        for block in self.blocks:
            x = x + block(x) * self.blocks[0].gain
        return x


class Residual(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, width)

    def forward(self, x, scale):
        return x + self.fc(self.norm(x)) * scale


class Chained(nn.Module):  # each block's output is the next one's input: a chain (only the last outputs kept)
    def __init__(self, width=16):
        super().__init__()
        self.embed = nn.Linear(width, width)
        self.blocks = nn.ModuleList(Residual(width) for _ in range(4))
        self.head = nn.Linear(width, 4)

    def forward(self, x):
        x = self.embed(x)
        scale = torch.ones(())
        for block in self.blocks:
            x = block(x, scale)
        return self.head(x)


class AllHidden(nn.Module):  # a chain whose head reads every block's output: not only the last one's
    def __init__(self, width=16):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(width, width)) for _ in range(3))
        self.head = nn.Linear(width, 4)

    def forward(self, x):
        hidden = []
        for block in self.blocks:
            x = block(x)
            hidden.append(x)
        return self.head(torch.stack(hidden).mean(0))


class Counting(nn.Module):  # the glue between blocks keeps state: replaying a stage sees other inputs
    def __init__(self, width=16):
        super().__init__()
        self.blocks = blocks(width)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        for block in self.blocks:
            x = block(x) + self.calls
        return x
"""


def _write(folder: Path, script_text: str, entry: str, seed: int = 0) -> tuple[Path, Path]:
    script = folder / f"{entry.lower()}.py"
    script.write_text(script_text)
    namespace: dict = {}
    exec(compile(script_text, str(script), "exec"), namespace)
    torch.manual_seed(seed)
    model = namespace[entry]().eval()
    state = {k: v for k, v in model.state_dict().items() if k != "head.weight" or entry != "Net"}
    checkpoint = folder / f"{entry.lower()}.safetensors"
    save_file(state, checkpoint)
    return script, checkpoint


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    folder = tmp_path_factory.mktemp("blocks")
    script, checkpoint = _write(folder, SCRIPT, "Net")
    g = torch.Generator().manual_seed(1)
    samples = [torch.randint(0, 40, (2, 16), generator=g) for _ in range(9)]
    return script, checkpoint, samples


def _quantize(script, checkpoint, entry, config, samples, lazy, **options):
    loaded = open_model(script, checkpoint, entry=entry, lazy=lazy)
    result = quantize(loaded.model, config, calibration=samples, **options)
    return loaded, result


def _bytes_read(script, checkpoint, config, samples) -> int:
    loaded, _ = _quantize(script, checkpoint, "Net", config, samples, True, validate=False)
    weights = lazy_weights(loaded.model)
    assert weights is not None
    return weights.bytes_read


@pytest.mark.parametrize("mode", list(MODES))
def test_block_by_block_equals_the_in_memory_run(net, tmp_path, caplog, mode):
    script, checkpoint, samples = net
    files = {}
    for lazy in (True, False):
        with caplog.at_level(logging.INFO, logger="mono_quant_core"):
            caplog.clear()
            _, result = _quantize(script, checkpoint, "Net", MODES[mode], samples, lazy)
        assert result.report.load_test_passed, result.report.failures
        assert ("block by block: 3 blocks" in caplog.text) == lazy
        assert "each feeds the next" not in caplog.text  # x = x + block(x): the sum, not the output
        path = tmp_path / f"{lazy}.safetensors"
        save_quantized(result, path)
        files[lazy] = (load_file(path), result.report)
    (lazy_t, lazy_r), (eager_t, eager_r) = files[True], files[False]
    assert list(lazy_t) == list(eager_t)
    assert all(torch.equal(lazy_t[k], eager_t[k]) for k in lazy_t)
    assert lazy_r.output_sqnr_db == eager_r.output_sqnr_db
    assert [r.algorithm for r in lazy_r.layers] == [r.algorithm for r in eager_r.layers]


@pytest.mark.parametrize("mode", ["static", "gptq", "static-bias-correction"])
def test_each_weight_is_read_a_bounded_number_of_times_whatever_the_samples(net, monkeypatch, mode):
    script, checkpoint, samples = net
    config = MODES[mode]
    declared = sum(t.numel() * t.element_size() for t in load_file(checkpoint).values())
    few, many = _bytes_read(script, checkpoint, config, samples[:3]), _bytes_read(script, checkpoint, config, samples)
    # The same bytes for 3 and 9 samples: blocks are read once per pass over all samples.  (The
    # check pass, calibration, the build and the float layers' final read: about 4 reads.)
    assert few == many
    assert many <= 5 * declared
    # Without blocks each sample reads the whole model again (GPTQ: again for each layer).
    import mono_quant_core.quantizer as quantizer

    monkeypatch.setattr(quantizer, "plan_blocks", lambda *args, **kwargs: None)
    streamed_few = _bytes_read(script, checkpoint, config, samples[:3])
    streamed = _bytes_read(script, checkpoint, config, samples)
    assert streamed > streamed_few and streamed > 1.5 * many


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("Twice", "the blocks do not run exactly once each, in order"),
        ("Between", "mix runs between the blocks"),
        ("Counting", "blocks.1 differs when the blocks before it are replayed"),
    ],
)
def test_models_that_do_not_split_into_blocks_run_whole_and_say_why(tmp_path, caplog, entry, why):
    script, checkpoint = _write(tmp_path, NOT_CHAINED, entry)
    samples = [torch.randn(2, 16, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    results = {}
    for lazy in (True, False):
        with caplog.at_level(logging.INFO, logger="mono_quant_core"):
            caplog.clear()
            loaded = open_model(script, checkpoint, entry=entry, lazy=lazy)
            results[lazy] = quantize(loaded.model, QuantConfig(mode="static"), calibration=samples, validate=False)
        assert (why in caplog.text) == lazy
    if entry == "Counting":  # its output depends on how many passes ran before: checking it took two more
        return
    lazy_state, eager_state = results[True].model.state_dict(), results[False].model.state_dict()
    assert all(
        torch.equal(lazy_state[k], eager_state[k]) for k in eager_state if isinstance(eager_state[k], torch.Tensor)
    )


def test_a_bad_sample_is_named_and_cancel_leaves_no_block_read(net):
    script, checkpoint, samples = net
    broken = [*samples[:2], torch.full((2, 16), 99), *samples[2:5]]  # ids past the vocabulary: the embedding raises
    loaded = open_model(script, checkpoint, entry="Net", lazy=True)
    with pytest.raises(CalibrationError, match="calibration sample 3"):
        quantize(loaded.model, QuantConfig(mode="static"), calibration=broken, validate=False)
    assert all(p.device.type == "meta" for p in loaded.model.parameters())

    token = CancelToken()
    seen = []

    def progress(done: int, total: int, message: str) -> None:
        seen.append(message)
        if "calibrating block 2" in message:
            token.cancel()

    with pytest.raises(Cancelled):
        quantize(loaded.model, QuantConfig(mode="static"), calibration=samples, progress=progress, cancel=token)
    assert any("calibrating block 1/3" in m for m in seen)
    assert all(p.device.type == "meta" for p in loaded.model.parameters())


def test_minilm_static_block_by_block_equals_the_in_memory_run(caplog):
    """The pretrained all-MiniLM-L6-v2 (a transformers BertModel) splits into its 6 encoder
    layers; its int8 static model is the in-memory run's, tensor for tensor."""
    from algorithm_models import MODEL_DIR, ROOT, SENTENCES, batches

    script = ROOT / "tests" / "core" / "data_loading" / "minilm_model.py"
    data = batches(SENTENCES[:8])
    states = {}
    for lazy in (True, False):
        with caplog.at_level(logging.INFO, logger="mono_quant_core"):
            caplog.clear()
            loaded = open_model(script, MODEL_DIR / "model.safetensors", lazy=lazy)
            result = quantize(loaded.model, QuantConfig(mode="static"), calibration=data, validate=False)
        assert ("block by block: 6 blocks (encoder.layer.0" in caplog.text) == lazy
        # BertLayer hands its hidden states straight to the next: only the last outputs are kept
        assert ("each feeds the next, only the last one's outputs kept" in caplog.text) == lazy
        states[lazy] = result.model.state_dict()
    assert list(states[True]) == list(states[False])
    assert all(torch.equal(v, states[False][k]) for k, v in states[True].items() if isinstance(v, torch.Tensor))


def test_a_forward_that_reads_its_blocks_attributes_still_splits(tmp_path, caplog):
    """Blocks and early modules answered from their outputs still show the replaced module's
    attributes (``self.blocks[0].gain``, ``self.embed.out_features``), as the in-memory run."""
    script, checkpoint = _write(tmp_path, NOT_CHAINED, "ReadsBlocks")
    samples = [torch.randn(2, 16, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    states = {}
    for lazy in (True, False):
        with caplog.at_level(logging.INFO, logger="mono_quant_core"):
            caplog.clear()
            loaded = open_model(script, checkpoint, entry="ReadsBlocks", lazy=lazy)
            result = quantize(loaded.model, QuantConfig(mode="static"), calibration=samples, validate=False)
        assert ("block by block: 3 blocks" in caplog.text) == lazy
        states[lazy] = result.model.state_dict()
    assert all(torch.equal(v, states[False][k]) for k, v in states[True].items() if isinstance(v, torch.Tensor))


def test_validating_a_lazy_model_never_holds_every_layers_pack(net, monkeypatch):
    """Each int8 kernel packs a copy of its layer's codes; validating a model built lazily drops
    each layer's pack after its call (so the packs never add up to a second quantized model, as
    they did on the 7B-class benchmark: 13.8 GB for a 6.7 GB output), and the next forward packs
    the same kernel again without probing."""
    import mono_quant_core.modules.conv as conv
    import mono_quant_core.modules.linear as linear
    from mono_quant_core.modules.base import QuantizedModule

    script, checkpoint, samples = net
    loaded = open_model(script, checkpoint, entry="Net", lazy=True)
    result = quantize(loaded.model, QuantConfig(mode="static"), calibration=samples)
    assert result.report.load_test_passed, result.report.failures
    layers = [m for m in result.model.modules() if isinstance(m, QuantizedModule) and m.spec is not None]
    kernels = {m.kernel for m in layers}
    assert "onednn-static" in kernels
    assert all(m._kernel_state is None for m in layers)

    eager = open_model(script, checkpoint, entry="Net")
    kept = quantize(eager.model, QuantConfig(mode="static"), calibration=samples).model  # in memory: kept
    assert any(m._kernel_state is not None for m in kept.modules() if isinstance(m, QuantizedModule))

    def no_probe(_module):
        raise AssertionError("probed again")

    monkeypatch.setattr(linear, "select_linear_kernel", no_probe)
    monkeypatch.setattr(conv, "select_conv_kernel", no_probe)
    with torch.inference_mode():
        result.model(samples[0])
    assert {m.kernel for m in layers} == kernels
    packed = [m for m in layers if m.kernel in ("onednn-static", "onednn-qconv")]
    assert len(packed) == 8 and all(m._kernel_state is not None for m in packed)


@pytest.mark.parametrize("mode", list(MODES))
def test_a_chain_of_blocks_keeps_one_blocks_outputs_and_equals_the_in_memory_run(tmp_path, caplog, monkeypatch, mode):
    import mono_quant_core.sequential as sequential

    script, checkpoint = _write(tmp_path, NOT_CHAINED, "Chained")
    samples = [torch.randn(2, 16, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    kept: list[int] = []
    finish = sequential.Staged.finish

    def counting(self, block, i, inputs):
        finish(self, block, i, inputs)
        kept.append(sum(1 for outputs in self.outputs if outputs))

    monkeypatch.setattr(sequential.Staged, "finish", counting)
    states = {}
    for lazy in (True, False):
        with caplog.at_level(logging.INFO, logger="mono_quant_core"):
            caplog.clear()
            loaded = open_model(script, checkpoint, entry="Chained", lazy=lazy)
            result = quantize(loaded.model, MODES[mode], calibration=samples)
        assert result.report.load_test_passed, result.report.failures
        assert (
            "block by block: 4 blocks (blocks.0, ...), one read at a time; each feeds the next" in caplog.text
        ) == lazy
        states[lazy] = result.model.state_dict()
    assert kept and max(kept) == 1  # one block's outputs at a time
    assert list(states[True]) == list(states[False])
    assert all(torch.equal(v, states[False][k]) for k, v in states[True].items() if isinstance(v, torch.Tensor))


def test_a_chain_whose_later_layers_read_every_block_keeps_every_blocks_outputs(tmp_path, caplog):
    script, checkpoint = _write(tmp_path, NOT_CHAINED, "AllHidden")
    samples = [torch.randn(2, 16, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    states = {}
    for lazy in (True, False):
        with caplog.at_level(logging.INFO, logger="mono_quant_core"):
            caplog.clear()
            loaded = open_model(script, checkpoint, entry="AllHidden", lazy=lazy)
            states[lazy] = quantize(
                loaded.model, QuantConfig(mode="static"), samples, validate=False
            ).model.state_dict()
        assert ("block by block: 3 blocks" in caplog.text) == lazy
        assert "each feeds the next" not in caplog.text  # the head reads all three outputs
    assert all(torch.equal(v, states[False][k]) for k, v in states[True].items() if isinstance(v, torch.Tensor))
