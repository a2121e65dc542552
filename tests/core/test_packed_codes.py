"""A dynamic int8 Linear that has run keeps its codes in fbgemm's pack alone (one copy of the
int8 bytes, not two) and gives them back exactly to whatever reads, saves, copies, moves or
loads the layer."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn

import mono_quant_core.kernels.fbgemm_dynamic as fbgemm
from mono_quant_core import QuantConfig, load_quantized, quantize, save_quantized
from mono_quant_core.modules import QuantizedLinear
from mono_quant_core.modules.base import layout_only
from mono_quant_core.serialization.save import estimate_file_bytes
from mono_quant_core.structure import shallow_clone

CONFIGS = {
    "symmetric per-channel": QuantConfig(mode="dynamic"),
    "asymmetric per-tensor": QuantConfig(mode="dynamic", scheme="asymmetric", granularity="per-tensor"),
}


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 8)).eval()


def inputs(rows: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randn(rows, 64, generator=torch.Generator().manual_seed(seed))


def quantized(config: QuantConfig = CONFIGS["symmetric per-channel"]) -> nn.Module:
    return quantize(mlp(), config, calibration=[inputs()], validate=False).model


def dropped(layer: nn.Module) -> bool:
    return layer._buffers["weight"] is None


@pytest.fixture
def packs(monkeypatch):
    """Counts of fbgemm packs and unpacks."""
    counts = {"pack": 0, "unpack": 0}
    real_pack, real_unpack = fbgemm.FbgemmDynamic.pack, fbgemm._unpack

    def pack(self, module):
        counts["pack"] += 1
        return real_pack(self, module)

    def unpack(packed):
        counts["unpack"] += 1
        return real_unpack(packed)

    monkeypatch.setattr(fbgemm.FbgemmDynamic, "pack", pack)
    monkeypatch.setattr(fbgemm, "_unpack", unpack)
    return counts


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_after_a_forward_only_the_pack_holds_the_codes_and_the_state_dict_is_unchanged(config):
    q = quantized(config)
    before = {k: v.clone() for k, v in q.state_dict().items()}
    y = q(inputs())
    assert q[0].kernel == "fbgemm-dynamic" and dropped(q[0]) and dropped(q[2])
    after = q.state_dict()
    assert list(after) == list(before)  # the same keys in the same order (the file's order)
    assert all(torch.equal(after[k], before[k]) and after[k].dtype == before[k].dtype for k in before)
    assert dropped(q[0])  # a state dict unpacks into the dict, not back into the layer
    assert torch.equal(q(inputs()), y)


def test_reading_the_codes_restores_them_exactly_without_a_new_pack(packs):
    q = quantized()
    codes = q[0].weight.clone()
    y = q(inputs())
    assert packs["pack"] == 2 and dropped(q[0])
    assert torch.equal(q[0].weight, codes) and not dropped(q[0])
    assert torch.equal(q(inputs()), y)
    assert packs["pack"] == 2, "the restored codes are the pack's own: no re-pack"
    assert dropped(q[0]), "the next forward lets the pack hold them again"


def test_codes_written_in_place_after_reading_are_packed_again(packs):
    q = quantized()
    q(inputs())
    q[0].weight.zero_()  # restored, then written: the pack no longer matches
    y = q[0](inputs())
    assert packs["pack"] == 3
    assert torch.equal(y, q[0].bias.detach().expand_as(y))


def test_a_referenced_buffer_is_kept():
    """Codes someone else holds (a tie, a view, a name) would not be freed: the layer keeps them."""
    q = quantized()
    held = q[0].weight
    q(inputs())
    assert not dropped(q[0]) and q[0]._buffers["weight"] is held
    assert dropped(q[2])


def test_without_an_exact_unpack_the_layer_keeps_its_codes(monkeypatch):
    monkeypatch.setattr(fbgemm, "unpack_exact", lambda: False)
    q = quantized()
    q(inputs())
    assert q[0].kernel == "fbgemm-dynamic" and not dropped(q[0])


def test_unpack_exact_holds_on_this_torch():
    fbgemm.unpack_exact.cache_clear()
    assert fbgemm.unpack_exact()


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "shallow_clone"])
def test_copies_of_a_run_model_compute_the_same(how):
    q = quantized()
    x = inputs()
    y = q(x)
    if how == "deepcopy":
        c = copy.deepcopy(q)
    elif how == "pickle":
        c = pickle.loads(pickle.dumps(q))
    else:
        c = shallow_clone(q)
    assert torch.equal(c(x), y)
    assert torch.equal(q(x), y)


def test_moving_and_loading_a_run_layer():
    q = quantized()
    x = inputs()
    y = q(x)
    q.to(torch.float64).to(torch.float32)  # the codes keep their dtype; the layer still computes alike
    assert q[0].weight.dtype == torch.int8
    assert torch.equal(q(x), y)
    other = quantize(mlp(seed=5), QuantConfig(mode="dynamic"), calibration=[inputs()], validate=False).model
    q.load_state_dict(other.state_dict(), strict=True)
    assert torch.equal(q(x), other(x))


def test_a_run_model_saves_the_same_file_and_reloads_bit_exactly(tmp_path):
    result = quantize(mlp(), QuantConfig(mode="dynamic"), calibration=[inputs()], validate=False)
    save_quantized(result, tmp_path / "before.safetensors")
    estimate_before = estimate_file_bytes(result)
    y = result.model(inputs())
    assert dropped(result.model[0])
    assert estimate_file_bytes(result) == estimate_before == (tmp_path / "before.safetensors").stat().st_size
    assert dropped(result.model[0]), "the size estimate never unpacks"
    save_quantized(result, tmp_path / "after.safetensors")
    assert (tmp_path / "after.safetensors").read_bytes() == (tmp_path / "before.safetensors").read_bytes()
    loaded = load_quantized(tmp_path / "after.safetensors", model=mlp())
    assert torch.equal(loaded(inputs()), y)


def test_layout_only_gives_shapes_and_dtypes_without_unpacking(packs):
    q = quantized()
    q(inputs())
    with layout_only():
        state = q.state_dict()
    assert packs["unpack"] == 0
    assert state["0.weight"].shape == (96, 64) and state["0.weight"].dtype == torch.int8
    assert torch.equal(q.state_dict()["0.weight"], q[0].weight)  # outside: the codes themselves
    assert packs["unpack"] == 3  # the state dict's two layers, then the first layer's read


def test_releasing_the_kernel_restores_the_codes_once(packs):
    """Validation of a model larger than memory releases each pack after its call: the codes
    come back once and then stay, since every later pack is released again."""
    q = QuantizedLinear.from_float(mlp()[0], QuantConfig(mode="dynamic"))
    x = inputs()
    y = q(x)
    for _ in range(3):
        q.release_kernel()
        assert not dropped(q)
        assert torch.equal(q(x), y)
    assert packs["unpack"] == 1 and packs["pack"] == 4


def test_validated_quantize_of_a_dynamic_model_passes_its_round_trip():
    result = quantize(mlp(), QuantConfig(mode="dynamic"), calibration=[inputs(seed=s) for s in range(4)])
    assert result.report.load_test_passed, result.report.failures
    assert dropped(result.model[0])
    buffer = io.BytesIO()
    torch.save(result.model.state_dict(), buffer)
    assert buffer.tell() > 96 * 64  # the codes are in the state dict


def test_reading_once_through_the_layer_leaves_the_codes_in_the_pack():
    """Dequantizing, range checks and other one-off reads unpack for the caller only."""
    q = quantized()
    reference = quantized()
    q(inputs())
    assert torch.equal(q[0].dequantized_weight(), reference[0].dequantized_weight())
    assert q[0].weight_range_problems() == []
    assert torch.equal(q[0].stored("weight"), reference[0].weight)
    assert dropped(q[0])


def test_a_run_model_exports_to_compressed_tensors(tmp_path):
    """The exporter read the layer's buffers directly: codes held by the pack alone were missing."""
    from mono_quant_core.serialization.compressed_tensors import save_compressed_tensors

    result = quantize(mlp(), QuantConfig(mode="dynamic"), calibration=[inputs()], validate=False)
    save_compressed_tensors(result, tmp_path / "before")
    result.model(inputs())
    assert dropped(result.model[0])
    save_compressed_tensors(result, tmp_path / "after")
    for f in sorted(p.name for p in (tmp_path / "before").iterdir()):
        assert (tmp_path / "after" / f).read_bytes() == (tmp_path / "before" / f).read_bytes(), f
