"""The ``train_lora`` row of ``reference.py``: LoRA on a frozen LLaMA, hand-written.

What it mirrors (``lm/src/lora/`` and ``bench/src/rows/lora.rs``): every one of the seven
projections of every layer (q, k, v, o, gate, up, down) keeps its frozen weight and gains a side
path ``scale * (x @ A.T) @ B.T`` with ``A: (rank, in)``, ``B: (out, rank)``, ``scale = alpha / rank``
(rank 16, alpha 32: the LLaVA trainer's, configs/llava/smollm2.toml); one step is the next-token
cross-entropy of ``B`` sequences (the LM trainer's: every position but the last predicts the next
id, the output matrix applied to those positions only), backward, ``clip_grad_norm_`` to 1 and
AdamW (lr 1e-4, weight decay 0) over the adapters alone.

The base is ``DIR/lora-base`` (an HF Llama directory, bf16 weights widened to float32) that
``vqrae bench init --preset default`` writes: SmolLM2-135M-Instruct's shape with random weights.
``DIR/lora-base/adapters-init.safetensors`` holds the adapters the check starts from (PEFT names;
``A`` as the Rust row initialises it, ``B`` random); the row starts from the same ``A`` with
``B = 0``, as the Rust row does.

The model class itself (``Llama``) is reference.py's; this module only wraps its projections, so
it imports nothing from reference.py (which imports it).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

LORA_DIR = "lora-base"
ADAPTERS_INIT = "adapters-init.safetensors"
RANK = 16
ALPHA = 32.0
LR = 1e-4
WEIGHT_DECAY = 0.0
GRAD_CLIP = 1.0
PREFIX = "base_model.model.model.layers"
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")

# check: the losses to 1e-4 relative, the loss drops of the two steps to 1e-3 and the gradient norms
# before clipping to 1e-4 (measured on 2 CPU cores: 9e-8, 6e-6 and 2e-7).
LOSS_RTOL = 1e-4
DELTA_RTOL = 1e-3
NORM_RTOL = 1e-4


class LoraLinear(nn.Module):
    """``base(x) + scale * (x @ A.T) @ B.T`` beside a frozen bias-free ``nn.Linear``."""

    def __init__(self, base: nn.Linear, a: torch.Tensor, b: torch.Tensor, scale: float):
        super().__init__()
        out_f, in_f = base.weight.shape
        if a.shape[1] != in_f or b.shape[0] != out_f or a.shape[0] != b.shape[1]:
            raise ValueError(f"adapter A {tuple(a.shape)}, B {tuple(b.shape)} do not fit a "
                             f"({out_f}, {in_f}) projection")
        self.base = base
        self.lora_A = nn.Parameter(a.detach().clone().float())
        self.lora_B = nn.Parameter(b.detach().clone().float())
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * ((x @ self.lora_A.t()) @ self.lora_B.t())


def tensor_name(layer: int, proj: str, part: str) -> str:
    """PEFT's name of an adapter matrix (``lm/src/lora/adapters.rs``: ``lora_tensor_name``)."""
    module = f"self_attn.{proj}" if proj in ATTENTION else f"mlp.{proj}"
    return f"{PREFIX}.{layer}.{module}.{part}.weight"


def attach(lm: nn.Module, adapters: dict[str, torch.Tensor], zero_b: bool) -> list[nn.Parameter]:
    """Freezes every weight of ``lm`` (reference.py's Llama) and wraps its seven projections per
    layer with the adapters of ``adapters`` (``B`` zeroed when ``zero_b``). Returns the adapter
    parameters (A and B of every projection), the only trainables. Every tensor of
    ``adapters`` must be used."""
    for p in lm.parameters():
        p.requires_grad_(False)
    scale = ALPHA / RANK
    used, params = set(), []
    for i, layer in enumerate(lm.layers):
        for proj in ATTENTION + MLP:
            owner = layer.self_attn if proj in ATTENTION else layer
            names = tensor_name(i, proj, "lora_A"), tensor_name(i, proj, "lora_B")
            missing = [n for n in names if n not in adapters]
            if missing:
                raise KeyError(f"adapters lack {missing}")
            a, b = (adapters[n] for n in names)
            if zero_b:
                b = torch.zeros_like(b)
            wrapped = LoraLinear(getattr(owner, proj), a, b, scale)
            setattr(owner, proj, wrapped)
            used.update(names)
            params += [wrapped.lora_A, wrapped.lora_B]
    extra = sorted(set(adapters) - used)
    if extra:
        raise KeyError(f"adapter tensors not used: {extra[:4]}{' ...' if len(extra) > 4 else ''}")
    return params


def optimizer(params: list[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=WEIGHT_DECAY)


def loss_of(lm: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of ``ids`` (B, T): positions 0..T-2 predict ids 1..T-1, the
    output matrix applied to those positions only (``lm/src/batch.rs``: ``TrainBatch::loss``)."""
    h = lm.hidden(ids)[:, :-1]
    logits = lm.logits(h.reshape(-1, h.shape[-1]))
    return F.cross_entropy(logits, ids[:, 1:].reshape(-1))


def step(lm: nn.Module, opt: torch.optim.Optimizer, params: list[nn.Parameter], ids: torch.Tensor):
    """One optimizer step; returns (loss before the update, gradient norm before clipping)."""
    loss = loss_of(lm, ids)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
    opt.step()
    return loss.detach(), norm.detach()


def base_dir(directory: Path) -> Path:
    d = directory / LORA_DIR
    if not (d / "config.json").exists():
        raise FileNotFoundError(f"{d}: missing; `vqrae bench init --preset default` writes the "
                                f"train_lora row's base (run it again)")
    return d


def rel(ours: float, ref: float) -> float:
    return abs(ours - ref) / max(abs(ref), 1e-30)


def check(lm: nn.Module, adapters: dict[str, torch.Tensor], ids: torch.Tensor,
          losses: torch.Tensor, norms: torch.Tensor) -> dict:
    """Two steps from the Rust check's adapters on its ids (``lm`` on the device of ``ids``): the
    three losses (before, between, after), the two loss changes and the two gradient norms
    against the Rust ones (``losses``, ``norms``)."""
    params = attach(lm, {k: v.to(ids.device) for k, v in adapters.items()}, zero_b=False)
    opt = optimizer(params)
    ours, our_norms = [], []
    for _ in range(2):
        loss, norm = step(lm, opt, params, ids)
        ours.append(float(loss))
        our_norms.append(float(norm))
    with torch.no_grad():
        ours.append(float(loss_of(lm, ids)))
    ref = [float(x) for x in losses]
    ref_norms = [float(x) for x in norms]
    loss_rel = max(rel(o, r) for o, r in zip(ours, ref))
    deltas = [ours[i] - ours[i + 1] for i in range(2)]
    ref_deltas = [ref[i] - ref[i + 1] for i in range(2)]
    delta_rel = max(rel(o, r) for o, r in zip(deltas, ref_deltas))
    norm_rel = max(rel(o, r) for o, r in zip(our_norms, ref_norms))
    return {"ok": loss_rel <= LOSS_RTOL and delta_rel <= DELTA_RTOL and norm_rel <= NORM_RTOL,
            "losses": ours, "expected_losses": ref, "max_rel_loss": loss_rel,
            "loss_drops": deltas, "max_rel_loss_drop": delta_rel,
            "grad_norms": our_norms, "expected_grad_norms": ref_norms, "max_rel_grad_norm": norm_rel,
            "tol": {"loss": LOSS_RTOL, "loss_drop": DELTA_RTOL, "grad_norm": NORM_RTOL},
            "trainable_params": sum(p.numel() for p in params)}
