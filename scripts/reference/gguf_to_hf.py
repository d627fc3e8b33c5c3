"""A Hugging Face directory (f32 safetensors, tokenizer) of a GGUF Llama-family model, made by
transformers' own GGUF reader: a decoder in the layout `saveMerged` writes a directory for.

    /path/to/venv/bin/python scripts/reference/gguf_to_hf.py <file.gguf> <out dir>
"""
import pathlib
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

gguf, out = pathlib.Path(sys.argv[1]), sys.argv[2]
tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
# transformers will not save a model it read from GGUF: copy the weights into a plain one.
config = loaded.config
if hasattr(config, "quantization_config"):
    del config.quantization_config
model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
model.load_state_dict(loaded.state_dict())
model.save_pretrained(out)
tokenizer.save_pretrained(out)
print(out)
