"""The PyTorch + PEFT side of `npm run bench:train` (bench/train.mjs runs it; not part of the
product). Trains all-MiniLM-L6-v2 with a classification head and a PEFT adapter on all linear
layers for a few steps of IMDB reviews and prints one JSON line: per-step seconds, evaluation
examples/s, peak RSS and the trainable parameter count.

The step is the same computation kronlora's trainer does: full batches of `batch` reviews
truncated to `max_length` tokens, AdamW (lr 1e-3, weight decay 0.01), gradient clipping at 1,
no dropout in the frozen model (kronlora's models have none), `eval()` + `no_grad` for
evaluation. Tokenisation is inside the timed region for evaluation, as in kronlora's
`evaluate()`; training batches are tokenised before the timed steps, as kronlora does before its
first step.

    python bench/peft_train.py --model DIR --data FILE.jsonl --adapter lora|lokr \
        [--steps 8] [--warmup 2] [--batch 16] [--max-length 128] [--threads 2] [--eval 64]
"""

import argparse
import json
import resource
import statistics
import time

import torch
from peft import LoKrConfig, LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--adapter", choices=["lora", "lokr"], required=True)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval", type=int, default=64)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    records = [json.loads(line) for line in open(a.data, encoding="utf-8") if line.strip()]
    labels = sorted({r["label"] for r in records})
    config = AutoConfig.from_pretrained(a.model, num_labels=len(labels))
    config.hidden_dropout_prob = 0.0
    config.attention_probs_dropout_prob = 0.0
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForSequenceClassification.from_pretrained(a.model, config=config)
    if a.adapter == "lora":
        peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="SEQ_CLS")
    else:
        # LoKr with r = 8 and factor 2: PEFT's closest to Kron-LoRA (d_A1 = 2, d_A2 = 4, r = 8).
        peft_config = LoKrConfig(r=8, alpha=16, decompose_factor=2, target_modules="all-linear", task_type="SEQ_CLS")
    model = get_peft_model(model, peft_config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.01)

    def batch_of(rs):
        enc = tokenizer(
            [r["text"] for r in rs], truncation=True, max_length=a.max_length, padding=True, return_tensors="pt"
        )
        enc["labels"] = torch.tensor([labels.index(r["label"]) for r in rs])
        return enc

    total = a.warmup + a.steps
    batches = [batch_of(records[i * a.batch : (i + 1) * a.batch]) for i in range(total)]
    model.train()
    step_seconds = []
    for i, batch in enumerate(batches):
        t0 = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= a.warmup:
            step_seconds.append(time.perf_counter() - t0)
    train_peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    model.eval()
    held_out = records[total * a.batch : total * a.batch + a.eval]
    with torch.no_grad():
        model(**{k: v for k, v in batch_of(held_out[: a.batch]).items() if k != "labels"})  # warm-up
        t0 = time.perf_counter()
        for i in range(0, len(held_out), a.batch):
            model(**batch_of(held_out[i : i + a.batch]))
        eval_seconds = time.perf_counter() - t0

    print(
        json.dumps(
            {
                "system": "pytorch-peft",
                "adapter": a.adapter,
                "trainable": trainable,
                "stepSeconds": step_seconds,
                "examplesPerSecond": a.batch / statistics.median(step_seconds),
                "evalExamplesPerSecond": len(held_out) / eval_seconds,
                "peakRssMiB": train_peak_kib / 1024,
                "versions": {"torch": torch.__version__, "peft": __import__("peft").__version__},
            }
        )
    )


if __name__ == "__main__":
    main()
