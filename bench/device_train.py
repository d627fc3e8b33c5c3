"""The inputs and the PyTorch + PEFT side of the device check (scripts/device-check.sh runs it on
the GPU machine, where no model can be downloaded; not part of the product).

`models OUT` writes random-weight models with the real architectures' shapes, each a Hugging
Face directory with a word-level tokenizer.json, and a JSONL file of records long enough that
every batch is full:
  OUT/encoder  all-MiniLM-L6-v2's shape (BERT, hidden 384, 6 layers, 12 heads, FFN 1536,
               vocabulary 30522), OUT/encoder.jsonl: {"text", "label"} records
  OUT/decoder  SmolLM2-135M's shape (Llama, hidden 576, 30 layers, 9 heads, 3 KV heads, FFN 1536,
               vocabulary 49152, tied embeddings), OUT/decoder.jsonl: {"text"} records
`--layers-encoder/--layers-decoder/--vocab` shrink them for a dry run on a CPU.

`peft --model DIR --data FILE --task cls|lm --adapter lora|lokr ...` trains for a few steps the
way kronlora's trainer does (full batches truncated to max_length, AdamW lr 1e-3 wd 0.01,
clipping at 1, no dropout) and prints one JSON line: per-step seconds, examples/s, tokens/s and
peak memory (CUDA: torch.cuda.max_memory_allocated; CPU: peak RSS).
"""

import argparse
import json
import os
import random
import resource
import statistics
import time

import torch


def word_tokenizer(vocab_size, bos_eos):
    """A WordLevel tokenizer over w<i>; [PAD] [CLS] [UNK] [SEP] first (encoders) or <s> </s>."""
    specials = ["<pad>", "<s>", "</s>", "<unk>"] if bos_eos else ["[PAD]", "[CLS]", "[UNK]", "[SEP]"]
    vocab = {w: i for i, w in enumerate(specials)}
    for i in range(len(specials), vocab_size):
        vocab[f"w{i}"] = i
    unk = "<unk>" if bos_eos else "[UNK]"
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": w, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
            for i, w in enumerate(specials)
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": unk},
        "decoder": None,
    }
    if bos_eos:
        tok["post_processor"] = None
    else:
        tok["post_processor"] = {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [1], "tokens": ["[CLS]"]}, "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}},
        }
    return tok


def write_model(model, tokenizer, out, config_extra):
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tokenizer, f)
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", **config_extra}, f)


def models(a):
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(a.seed)
    rng = random.Random(a.seed)
    v_enc, v_dec = a.vocab or 30522, a.vocab or 49152
    enc = BertConfig(vocab_size=v_enc, hidden_size=384, num_hidden_layers=a.layers_encoder, num_attention_heads=12,
                     intermediate_size=1536, max_position_embeddings=512)
    write_model(BertModel(enc), word_tokenizer(v_enc, False), os.path.join(a.out, "encoder"),
                {"pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]", "unk_token": "[UNK]"})
    dec = LlamaConfig(vocab_size=v_dec, hidden_size=576, num_hidden_layers=a.layers_decoder, num_attention_heads=9,
                      num_key_value_heads=3, intermediate_size=1536, max_position_embeddings=2048, rope_theta=100000.0,
                      tie_word_embeddings=True, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    write_model(LlamaForCausalLM(dec), word_tokenizer(v_dec, True), os.path.join(a.out, "decoder"),
                {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
    words = lambda v, n: " ".join(f"w{rng.randrange(4, v)}" for _ in range(n))  # noqa: E731
    with open(os.path.join(a.out, "encoder.jsonl"), "w") as f:
        for i in range(a.records):
            f.write(json.dumps({"text": words(v_enc, 160), "label": "pos" if i % 2 else "neg"}) + "\n")
    with open(os.path.join(a.out, "decoder.jsonl"), "w") as f:
        for _ in range(a.records):
            f.write(json.dumps({"text": words(v_dec, 600)}) + "\n")


def peak_memory_mib(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peft(a):
    from peft import LoKrConfig, LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    device = torch.device(a.device)
    torch.manual_seed(0)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[a.dtype]
    records = [json.loads(line) for line in open(a.data, encoding="utf-8") if line.strip()]
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    task = "SEQ_CLS" if a.task == "cls" else "CAUSAL_LM"
    if a.task == "cls":
        labels = sorted({r["label"] for r in records})
        config = AutoConfig.from_pretrained(a.model, num_labels=len(labels))
        config.hidden_dropout_prob = 0.0
        config.attention_probs_dropout_prob = 0.0
        model = AutoModelForSequenceClassification.from_pretrained(a.model, config=config, torch_dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=dtype)
    if a.adapter == "lora":
        cfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type=task)
    else:
        cfg = LoKrConfig(r=8, alpha=16, decompose_factor=2, target_modules="all-linear", task_type=task)
    model = get_peft_model(model, cfg)
    # Adapters (and the head) in float32 over a bf16 base, as kronlora keeps them.
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)

    def batch_of(rs):
        enc = tokenizer([r["text"] for r in rs], truncation=True, max_length=a.max_length, padding=True, return_tensors="pt")
        if a.task == "cls":
            enc["labels"] = torch.tensor([labels.index(r["label"]) for r in rs])
        else:
            enc["labels"] = enc["input_ids"].clone()
        return {k: v.to(device) for k, v in enc.items()}

    total = a.warmup + a.steps
    batches = [batch_of(records[i * a.batch : (i + 1) * a.batch]) for i in range(total)]
    tokens = int(batches[0]["input_ids"].numel())
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_seconds = []
    for i, batch in enumerate(batches):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=a.dtype == "bf16"):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= a.warmup:
            step_seconds.append(time.perf_counter() - t0)
    median = statistics.median(step_seconds)
    print(json.dumps({
        "system": "pytorch-peft", "adapter": a.adapter,
        "task": "classification" if a.task == "cls" else "causal-lm", "device": str(device), "dtype": a.dtype,
        "trainable": trainable, "stepSeconds": step_seconds, "examplesPerSecond": a.batch / median,
        "tokensPerSecond": tokens / median, "peakMemoryMiB": peak_memory_mib(device),
        "versions": {"torch": torch.__version__, "peft": __import__("peft").__version__},
    }))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("models")
    m.add_argument("out")
    m.add_argument("--layers-encoder", type=int, default=6)
    m.add_argument("--layers-decoder", type=int, default=30)
    m.add_argument("--vocab", type=int, default=0, help="both vocabularies (0: the real models' sizes)")
    m.add_argument("--records", type=int, default=400)
    m.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("peft")
    t.add_argument("--model", required=True)
    t.add_argument("--data", required=True)
    t.add_argument("--task", choices=["cls", "lm"], required=True)
    t.add_argument("--adapter", choices=["lora", "lokr"], required=True)
    t.add_argument("--device", default="cuda")
    t.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    t.add_argument("--steps", type=int, default=10)
    t.add_argument("--warmup", type=int, default=3)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--max-length", type=int, default=128)
    a = p.parse_args()
    models(a) if a.command == "models" else peft(a)


if __name__ == "__main__":
    main()
