"""Reference values from Hugging Face transformers (PyTorch) for kronlora's parity tests.

Run after `npm run fetch-models`, in a virtualenv with torch, transformers, gguf, safetensors:
    python scripts/reference/make_fixtures.py
Writes test/fixtures/minilm.json and test/fixtures/smollm2.json (small, committed). The tests
themselves need no Python.
"""
import json
import pathlib

import torch
import transformers
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODELS = ROOT / ".cache" / "models"
OUT = ROOT / "test" / "fixtures"
torch.manual_seed(0)
TOKENIZER_TEXTS = [
    "Hello, world!",
    "In 2024 there were 366 days; 12345 is a number.",
    "  leading spaces and\ttabs\nnew lines  ",
    "Ünïcödé — naïve café, 日本語, emoji 🎉.",
    "don't won't it's",
]


def minilm():
    path = MODELS / "minilm"
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, torch_dtype=torch.float32).eval()
    texts = ["Kron-LoRA adapts transformers with few parameters.", "The movie was wonderful!", "short"]
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return {
        "source": f"transformers {transformers.__version__}, torch {torch.__version__}, AutoModel + mean pooling",
        "tokenized": [{"text": t, "ids": tok(t)["input_ids"]} for t in TOKENIZER_TEXTS],
        "texts": texts,
        "input_ids": enc["input_ids"].tolist(),
        "attention_mask": enc["attention_mask"].tolist(),
        "mean_pooled": pooled.tolist(),
    }


def smollm2():
    path = MODELS / "smollm2"
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(path, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf, torch_dtype=torch.float32).eval()
    prompts = ["The capital of France is", "def fibonacci(n):"]
    cases = []
    for prompt in prompts:
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(ids).logits[0, -1]
        top = torch.topk(logits, 10).indices.tolist()
        spread = list(range(0, logits.shape[0], 997))
        indices = sorted(set(top + spread))
        cases.append({
            "prompt": prompt,
            "input_ids": ids[0].tolist(),
            "top10": top,
            "indices": indices,
            "logits": [logits[i].item() for i in indices],
        })
    return {
        "source": f"transformers {transformers.__version__}, torch {torch.__version__}, AutoModelForCausalLM(gguf_file) (weights dequantised to f32)",
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "tokenized": [{"text": t, "ids": tok(t)["input_ids"]} for t in TOKENIZER_TEXTS],
        "cases": cases,
    }


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for name, fn in [("minilm", minilm), ("smollm2", smollm2)]:
        data = fn()
        (OUT / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {OUT / (name + '.json')}")
