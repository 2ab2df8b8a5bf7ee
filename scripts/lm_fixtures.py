#!/usr/bin/env python3
"""Parity fixtures for vqrae-lm: tiny random Hugging Face `LlamaForCausalLM` models and their logits.

Why: no pretrained LLaMA weights exist offline, so the Rust model (lm/src/model.rs) is checked
against the reference implementation on random weights instead. The outputs are small enough to
commit (lm/tests/fixtures/), so `cargo test -p vqrae-lm` needs neither torch nor transformers.

    /root/.venvs/ref/bin/python scripts/lm_fixtures.py            # (re)writes lm/tests/fixtures/
    /root/.venvs/ref/bin/python scripts/lm_fixtures.py check DIR  # loads a Rust-written checkpoint

Each fixture directory holds what `save_pretrained(safe_serialization=True)` writes (config.json,
model.safetensors; f32) plus io.safetensors: `input_ids` (2, 12) int64 and the reference `logits`
(2, 12, vocab) f32 of a plain causal forward (eager attention, no padding).

Two models cover the code paths: `llama-mha` (4 heads, 4 kv heads, untied lm_head, head_dim =
hidden / heads) and `llama-gqa` (4 heads, 2 kv heads, tied embeddings, explicit head_dim 16 that
differs from hidden / heads, another rope_theta and eps).

Initialisation: HF's std 0.02 gives near-uniform logits, which would make a loose comparison pass
for a wrong model; every weight is redrawn with a larger std and the norm weights away from 1 so
that each part of the network moves the logits.

`check DIR` is the other direction: it loads a checkpoint the Rust code saved (config.json and
model.safetensors, plus io.safetensors with `input_ids` and the Rust `logits`) with
`LlamaForCausalLM.from_pretrained` and compares the logits (written by the ignored Rust test
`export_for_hf_check` in lm/tests/model.rs).
"""

import os
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "lm", "tests", "fixtures")

FIXTURES = {
    "llama-mha": dict(
        vocab_size=101,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    ),
    "llama-gqa": dict(
        vocab_size=101,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        rms_norm_eps=1e-6,
        rope_theta=500000.0,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    ),
}

BATCH, SEQ = 2, 12


def build(name: str, seed: int) -> None:
    torch.manual_seed(seed)
    cfg = LlamaConfig(**FIXTURES[name], attn_implementation="eager")
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
        ids = torch.randint(0, cfg.vocab_size, (BATCH, SEQ), dtype=torch.int64)
        logits = model(input_ids=ids).logits.float()
    out = os.path.join(OUT, name)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    # generation_config.json is not read by the Rust side; keep the fixture minimal.
    gen = os.path.join(out, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    save_file({"input_ids": ids.contiguous(), "logits": logits.contiguous()},
              os.path.join(out, "io.safetensors"))
    print(f"{name}: logits std {logits.std():.3f}, files in {out}")


def check(path: str) -> None:
    io = load_file(os.path.join(path, "io.safetensors"))
    model = LlamaForCausalLM.from_pretrained(path, attn_implementation="eager").float().eval()
    with torch.no_grad():
        ref = model(input_ids=io["input_ids"].long()).logits.float()
    diff = (ref - io["logits"].float()).abs().max().item()
    print(f"{path}: max |logits(HF) - logits(Rust)| = {diff:.3e}")
    if not diff < 1e-4:
        sys.exit(1)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "check":
        check(sys.argv[2])
        return
    if len(sys.argv) != 1:
        sys.exit(__doc__)
    torch.use_deterministic_algorithms(True)
    for seed, name in enumerate(FIXTURES):
        build(name, 1234 + seed)


if __name__ == "__main__":
    main()
