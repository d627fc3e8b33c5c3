"""Reference values from Hugging Face transformers (PyTorch) for kronlora's parity tests.

Run after `npm run fetch-models`, in a virtualenv with torch, transformers, gguf, safetensors:
    python scripts/reference/make_fixtures.py [minilm] [smollm2] [training]
Writes test/fixtures/{minilm,smollm2,training}.json (small, committed). The tests
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
    # The model's own chat template as transformers renders and tokenizes it.
    messages = [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy? Answer in one word."},
        {"role": "assistant", "content": "Rome"},
    ]
    chat = {
        "messages": messages,
        "text": tok.apply_chat_template(messages, tokenize=False),
        "ids": list(tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]),
        "prompt_text": tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True),
    }
    return {
        "source": f"transformers {transformers.__version__}, torch {torch.__version__}, AutoModelForCausalLM(gguf_file) (weights dequantised to f32)",
        "chat": chat,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "tokenized": [{"text": t, "ids": tok(t)["input_ids"]} for t in TOKENIZER_TEXTS],
        "cases": cases,
    }


def training():
    """torch.optim.AdamW trajectories, clip_grad_norm_, and transformers' LR schedules."""
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    g = torch.Generator().manual_seed(1)
    params = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
    initial = [p.clone().tolist() for p in params]
    ps = [torch.nn.Parameter(p.clone()) for p in params]
    opt = torch.optim.AdamW(ps, lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    lrs = [0.01, 0.02, 0.005, 0.01, 0.03]
    steps = []
    for lr in lrs:
        grads = [torch.randn(p.shape, generator=g) for p in ps]
        for p, gr in zip(ps, grads):
            p.grad = gr.clone()
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        steps.append({"lr": lr, "grads": [gr.tolist() for gr in grads], "params": [p.detach().clone().tolist() for p in ps]})
    clip_grads = [torch.randn(3, 4, generator=g) * 3, torch.randn(5, generator=g) * 3]
    cps = [torch.nn.Parameter(torch.zeros_like(c)) for c in clip_grads]
    for p, c in zip(cps, clip_grads):
        p.grad = c.clone()
    norm = torch.nn.utils.clip_grad_norm_(cps, max_norm=1.0)
    schedules = {}
    for name, make in [("constant", lambda o: get_constant_schedule_with_warmup(o, 3)),
                       ("linear", lambda o: get_linear_schedule_with_warmup(o, 3, 10)),
                       ("cosine", lambda o: get_cosine_schedule_with_warmup(o, 3, 10))]:
        o = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = make(o)
        values = []
        for _ in range(12):
            values.append(o.param_groups[0]["lr"])
            o.step()
            sched.step()
        schedules[name] = values
    return {
        "source": f"torch {torch.__version__} AdamW(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1), clip_grad_norm_(max_norm=1), transformers {transformers.__version__} schedules (warmup 3, total 10)",
        "adamw": {"initial": initial, "steps": steps},
        "clip": {"grads": [c.tolist() for c in clip_grads], "norm": norm.item(), "clipped": [p.grad.tolist() for p in cps]},
        "schedules": schedules,
    }


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    import sys
    wanted = sys.argv[1:] or ["minilm", "smollm2", "training"]
    for name, fn in [("minilm", minilm), ("smollm2", smollm2), ("training", training)]:
        if name not in wanted:
            continue
        data = fn()
        (OUT / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {OUT / (name + '.json')}")
