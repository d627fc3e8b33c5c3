"""Logits of a merged model directory written by kronlora's saveMerged, as Hugging Face
transformers computes them: the directory must load with no adapter support and give the
adapted model's outputs.

    /path/to/venv/bin/python scripts/reference/merged_logits.py <merged dir> <task> <texts.json>

<task> is sequence-classification (AutoModelForSequenceClassification: class logits) or
causal-lm (AutoModelForCausalLM: the next-token logits after each text). Prints
`{"logits": [[...], ...], "architectures": [...]}`. `scripts/reference/check_merged.mjs` runs
this next to kronlora's own logits and compares.
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

merged_dir, task, texts_file = sys.argv[1:4]
texts = json.load(open(texts_file))
tokenizer = AutoTokenizer.from_pretrained(merged_dir)
with torch.no_grad():
    if task == "sequence-classification":
        model = AutoModelForSequenceClassification.from_pretrained(merged_dir, dtype=torch.float32).eval()
        batch = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        logits = model(**batch).logits.tolist()
    elif task == "causal-lm":
        model = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
        logits = [model(**tokenizer(t, return_tensors="pt")).logits[0, -1].tolist() for t in texts]
    else:
        raise SystemExit(f"unknown task {task}")
print(json.dumps({"logits": logits, "architectures": model.config.architectures}))
