"""Next-token logits of a GGUF model without and with a LyCORIS file, as the LyCORIS library
(pip install lycoris-lora) applies it to the Hugging Face transformers model, to check that the
files kronlora's exportAdapter(path, { format: 'lycoris' }) writes mean the same thing there.

    /path/to/venv/bin/python scripts/reference/lycoris_logits.py <model.gguf> <file.safetensors> <texts.json>

Prints `{"base": [[...]], "adapted": [[...]], "modules": n, "kinds": [...]}`. Needs torch,
transformers, gguf and lycoris-lora; kronlora itself needs none of them.
`scripts/reference/check_lycoris.mjs` runs this next to kronlora and compares.
"""
import json
import os
import sys

import torch
from lycoris import create_lycoris_from_weights
from transformers import AutoModelForCausalLM, AutoTokenizer

gguf_path, lycoris_file, texts_file = sys.argv[1:4]
texts = json.load(open(texts_file))
folder, name = os.path.split(os.path.abspath(gguf_path))
tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32).eval()


def last_logits():
    rows = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            rows.append(model(ids).logits[0, -1].tolist())
    return rows


base = last_logits()
network, _ = create_lycoris_from_weights(1.0, lycoris_file, model)
network.apply_to()
adapted = last_logits()
kinds = sorted({type(m).__name__ for m in network.loras})
print(json.dumps({"base": base, "adapted": adapted, "modules": len(network.loras), "kinds": kinds}))
