"""Logits of a saved kronlora adapter as Hugging Face PEFT computes them, to check that the
files kronlora writes load in PEFT unchanged and mean the same thing.

    /path/to/venv/bin/python scripts/reference/peft_logits.py <model dir> <adapter dir> <num labels> <texts.json>

Prints `{"logits": [[...], ...]}` for the texts (a JSON array of strings). Needs torch,
transformers and peft (pip install torch transformers peft); kronlora itself needs none of them.
`scripts/reference/check_peft.mjs` runs this next to kronlora's own logits and compares.
"""
import json
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

model_dir, adapter_dir, num_labels, texts_file = sys.argv[1:5]
texts = json.load(open(texts_file))
base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=int(num_labels))
model = PeftModel.from_pretrained(base, adapter_dir).eval()
tokenizer = AutoTokenizer.from_pretrained(model_dir)
with torch.no_grad():
    batch = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    logits = model(**batch).logits
print(json.dumps({"logits": logits.tolist()}))
