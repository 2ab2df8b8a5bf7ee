#!/usr/bin/env python3
"""PyTorch reference of vqrae-rs for the side-by-side benchmark (eager; float32 on CPU, optionally CUDA).

What it mirrors (read from the Rust sources, not from the papers):

* the VQRAE tokenizer of ``tokenizer/src``: ``model.rs`` (encode = last-layer normed patch tokens,
  ``proj_in``, quantizer; decode = codewords -> decoder), ``vit.rs`` (pre-LN blocks, separate
  q/k/v, scale 1/sqrt(head_dim), exact or tanh GELU, optional LayerScale, patch embedding as a
  stride-p convolution), ``encoder/{own,siglip,dinov2}.rs`` (specs and tensor names),
  ``pos_embed.rs`` (MAE 2-D sin-cos table, bicubic resize of learned tables with
  ``align_corners=False``), ``quantizer.rs`` (SimVQ: frozen codebook ``C`` mapped by a learned
  linear ``W``; plain VQ; nearest codeword by ``|c|^2 - 2 z.c``; straight-through estimator;
  ``codebook + beta * commitment`` loss), ``decoder.rs`` (linear in, sin-cos positions, pre-LN
  blocks, final LN, linear pixel head, unpatchify) and ``train.rs`` (stage 1: encoder and SimVQ
  codebook frozen; loss ``l2 + 1.1 * feature matching on the frozen encoder + quant``; grad-norm
  clip 1.0; AdamW, weight decay 1e-4; the teacher features of the inputs are cached by training
  and so are computed once here, outside the timed step);
* the LM of ``lm/src/model.rs``: Hugging Face ``LlamaForCausalLM`` (RMSNorm, RoPE rotate-half,
  SwiGLU, grouped-query attention, no biases), re-implemented by hand and loaded from the HF
  weights (bf16 or f32; computed in f32), with a LlamaGen-style static KV cache for generation
  (``generate/src/sample.rs``: classifier-free guidance on 2B rows, ``u + s (c - u)`` then the
  restriction to the image-code ids, one sampled code fed to both rows of a pair); the unified
  vocabulary of ``lm/src/vocab.rs`` (codes at ``[text, text + codebook)``, then 3 markers).

How it is run (from the repository root, with the reference venv):

    PY=/root/.venvs/ref/bin/python
    $PY scripts/perf/reference.py check --dir DIR [--device cpu|cuda]   # agreement with DIR/expected.safetensors
    $PY scripts/perf/reference.py run --dir DIR --row tok_encode --batch 8 [--iters K] [--threads T]
        [--device cpu|cuda] [--dtype auto|float32|bfloat16]
    $PY scripts/perf/reference.py fixtures --out DIR2      # tiny tokenizer + PyTorch outputs for Rust tests
    $PY scripts/perf/reference.py cli-check --model models/tokenizer-easyvqa IMAGES...   # vs the vqrae CLI

``DIR`` holds ``tokenizer/`` (the project's checkpoint format: config.json + model.safetensors),
``lm/`` (an HF Llama directory) and, for ``check``, ``inputs.safetensors`` and
``expected.safetensors`` (written by ``vqrae bench init``); ``bench.json`` (optional) gives
``code_start``, ``code_end`` and ``image_tokens``. Rows of ``run``: tok_encode, tok_decode,
lm_prefill, lm_decode, train_tok, train_lm, train_lora (LoRA on ``DIR/lora-base``, a frozen
SmolLM2-size LLaMA: ``lora_reference.py``); each prints one JSON line.

Devices and precision: on ``--device cpu`` (the default) everything runs in float32. On
``--device cuda`` the weights and inputs are moved to the GPU; ``--dtype auto`` (the default) runs
the inference rows (tok_*, lm_prefill, lm_decode) in bfloat16 and the training rows in float32
with TF32 off (to compare like for like with the Rust f32 path); ``--dtype float32`` / ``bfloat16``
force the inference precision (also on CPU; training rows are float32 only). The few
numerically sensitive spots (SimVQ's nearest-codeword distances, RMSNorm's mean square, the
sampling softmax) are computed in float32 whatever the weights' dtype, as Hugging Face does for
the last two. ``check --device cuda`` runs the same comparisons in float32 (TF32 off) on the GPU.
The JSON line of ``run`` carries ``device`` and ``dtype``, and on CUDA ``peak_gpu_mib``
(``torch.cuda.max_memory_allocated``, reset after loading, before the warm-up).

Configs are read strictly: an unknown or unsupported field is an error, never a silent default.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

import lora_reference

REPO = Path(__file__).resolve().parents[2]
ROWS = ("tok_encode", "tok_decode", "lm_prefill", "lm_decode", "train_tok", "train_lm", "train_lora")

# Training constants of the Rust defaults (tokenizer/src/train.rs, configs/lm/joint-easyvqa.toml).
TOK_LOSS = {"l2": 1.0, "perceptual": 1.1, "quant": 1.0}
TOK_WEIGHT_DECAY = 1e-4
LM_WEIGHT_DECAY = 0.01
GRAD_CLIP = 1.0
LR = 1e-4
# lm_decode: prompt length and guidance scale; lm_prefill / train_lm: text part of a sequence.
DECODE_PROMPT = 18
GUIDANCE = 2.0
PREFILL_TEXT = 1 + 16 + 1  # <bos>, 16 caption tokens, <boi>: the Rust bench's prompt


class ConfigError(ValueError):
    """A config field this reference does not support (or a malformed config)."""


# --------------------------------------------------------------------------------------------
# Tensors on disk
# --------------------------------------------------------------------------------------------


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of a file as numpy arrays (bf16 is widened to f32; u32 stays u32)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    out = {}
    with safe_open(str(path), framework="pt") as f:
        for k in f.keys():
            t = f.get_tensor(k)
            if t.dtype in (torch.bfloat16, torch.float16):
                t = t.float()
            out[k] = t.numpy() if t.dtype != torch.uint32 else t.view(torch.int32).numpy().view(np.uint32)
    return out


def float_tensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a weights file as float32 torch tensors."""
    out = {}
    with safe_open(str(path), framework="pt") as f:
        for k in f.keys():
            out[k] = f.get_tensor(k).float()
    return out


def load_strict(module: nn.Module, tensors: dict[str, torch.Tensor], names: dict[str, str], what: str):
    """Copies ``tensors[names[p]]`` into every parameter/buffer ``p`` of ``module``. Every entry of
    ``names`` must exist with the right shape and every tensor of the file must be used."""
    state = dict(module.named_parameters())
    state.update(dict(module.named_buffers()))
    missing_in_map = sorted(set(state) - set(names))
    if missing_in_map:
        raise AssertionError(f"{what}: no file name for module tensors {missing_in_map}")
    for attr, file_name in names.items():
        if file_name not in tensors:
            raise KeyError(f"{what}: tensor {file_name!r} not found")
        src = tensors[file_name]
        dst = state[attr]
        if tuple(src.shape) != tuple(dst.shape):
            raise ValueError(f"{what}: {file_name} has shape {tuple(src.shape)}, expected {tuple(dst.shape)}")
        with torch.no_grad():
            dst.copy_(src)
    unused = sorted(set(tensors) - set(names.values()))
    if unused:
        raise KeyError(f"{what}: tensors this model does not use: {unused[:8]}{' ...' if len(unused) > 8 else ''}")


def export_state(module: nn.Module, names: dict[str, str]) -> dict[str, torch.Tensor]:
    state = dict(module.named_parameters())
    state.update(dict(module.named_buffers()))
    return {file_name: state[attr].detach().contiguous().clone() for attr, file_name in names.items()}


# --------------------------------------------------------------------------------------------
# Tokenizer config (tokenizer/src/model.rs VqraeConfig and its parts, serde defaults mirrored)
# --------------------------------------------------------------------------------------------

OWN_VIT_DEFAULTS = dict(hidden_size=192, num_layers=6, num_heads=3, mlp_ratio=4.0, patch_size=8,
                        image_size=64, layer_norm_eps=1e-6, pos_embed="learned", layer_scale=None)
SIGLIP_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       num_channels=3, image_size=224, patch_size=16, hidden_act="gelu_pytorch_tanh",
                       layer_norm_eps=1e-6)
DINOV2_DEFAULTS = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4.0, patch_size=14,
                       image_size=518, num_channels=3, layer_norm_eps=1e-6, layerscale_value=1.0, hidden_act="gelu",
                       qkv_bias=True, use_swiglu_ffn=False)
QUANTIZER_DEFAULTS = dict(kind="simvq", codebook_size=16384, dim=1536, beta=0.25, l2_normalize=False)
DECODER_DEFAULTS = dict(hidden_size=192, num_layers=6, num_heads=3, mlp_ratio=4.0, patch_size=None,
                        layer_norm_eps=1e-6)


def with_defaults(section: str, given: dict, defaults: dict) -> dict:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f"{section}: unknown field(s) {unknown} (known: {sorted(defaults)})")
    return {**defaults, **given}


def activation(name: str, section: str) -> str:
    """Serde names of vit.rs Activation: "gelu" (erf), "gelu_pytorch_tanh" / "gelu_new" (tanh)."""
    if name == "gelu":
        return "erf"
    if name in ("gelu_pytorch_tanh", "gelu_new"):
        return "tanh"
    raise ConfigError(f"{section}: activation {name!r} is not supported (gelu, gelu_pytorch_tanh, gelu_new)")


@dataclass
class BlockSpec:
    dim: int
    heads: int
    mlp_hidden: int
    eps: float
    act: str  # "erf" | "tanh"
    layer_scale: Optional[float]
    qkv_bias: bool

    def validate(self, what: str):
        if min(self.dim, self.heads, self.mlp_hidden) <= 0:
            raise ConfigError(f"{what}: block sizes must be positive: {self}")
        if self.dim % self.heads:
            raise ConfigError(f"{what}: width {self.dim} does not divide into {self.heads} heads")


# Tensor names inside one block (vit.rs BlockNames), relative to the block prefix.
OWN_BLOCK = dict(norm1="norm1", q="attn.q", k="attn.k", v="attn.v", out="attn.proj", ls1="ls1.gamma",
                 norm2="norm2", fc1="mlp.fc1", fc2="mlp.fc2", ls2="ls2.gamma")
SIGLIP_BLOCK = dict(norm1="layer_norm1", q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj",
                    out="self_attn.out_proj", ls1="", norm2="layer_norm2", fc1="mlp.fc1", fc2="mlp.fc2", ls2="")
DINOV2_BLOCK = dict(norm1="norm1", q="attention.attention.query", k="attention.attention.key",
                    v="attention.attention.value", out="attention.output.dense", ls1="layer_scale1.lambda1",
                    norm2="norm2", fc1="mlp.fc1", fc2="mlp.fc2", ls2="layer_scale2.lambda1")
# Encoder names (encoder/mod.rs VitNames), relative to "encoder.".
ENCODER_NAMES = {
    "vit": dict(patch="patch_embed", cls=None, pos="pos_embed", blocks="blocks", block=OWN_BLOCK, norm="norm"),
    "siglip": dict(patch="embeddings.patch_embedding", cls=None, pos="embeddings.position_embedding.weight",
                   blocks="encoder.layers", block=SIGLIP_BLOCK, norm="post_layernorm"),
    "dinov2": dict(patch="embeddings.patch_embeddings.projection", cls="embeddings.cls_token",
                   pos="embeddings.position_embeddings", blocks="encoder.layer", block=DINOV2_BLOCK,
                   norm="layernorm"),
}


@dataclass
class EncoderSpec:
    arch: str
    block: BlockSpec
    depth: int
    patch: int
    channels: int
    native_grid: tuple[int, int]
    pos: str  # "learned" (N, d) | "learned_cls" (1, 1+N, d) | "sincos"
    cls_token: bool

    @property
    def width(self) -> int:
        return self.block.dim


def encoder_spec(raw: dict) -> EncoderSpec:
    raw = dict(raw)
    arch = raw.pop("arch", None)
    if arch == "vit":
        c = with_defaults("encoder (vit)", raw, OWN_VIT_DEFAULTS)
        if c["pos_embed"] not in ("learned", "sincos"):
            raise ConfigError(f"encoder.pos_embed {c['pos_embed']!r} is not supported (learned, sincos)")
        block = BlockSpec(c["hidden_size"], c["num_heads"], int(c["hidden_size"] * c["mlp_ratio"]),
                          c["layer_norm_eps"], "erf", c["layer_scale"], True)
        grid = c["image_size"] // max(c["patch_size"], 1)
        spec = EncoderSpec("vit", block, c["num_layers"], c["patch_size"], 3, (grid, grid),
                           c["pos_embed"], False)
    elif arch == "siglip":
        c = with_defaults("encoder (siglip)", raw, SIGLIP_DEFAULTS)
        block = BlockSpec(c["hidden_size"], c["num_attention_heads"], c["intermediate_size"], c["layer_norm_eps"],
                          activation(c["hidden_act"], "encoder.hidden_act"), None, True)
        grid = c["image_size"] // max(c["patch_size"], 1)
        spec = EncoderSpec("siglip", block, c["num_hidden_layers"], c["patch_size"], c["num_channels"],
                           (grid, grid), "learned", False)
    elif arch == "dinov2":
        c = with_defaults("encoder (dinov2)", raw, DINOV2_DEFAULTS)
        if c["use_swiglu_ffn"]:
            raise ConfigError("encoder: DINOv2 with a SwiGLU MLP (dinov2-giant) is not supported")
        block = BlockSpec(c["hidden_size"], c["num_attention_heads"], int(c["hidden_size"] * c["mlp_ratio"]),
                          c["layer_norm_eps"], activation(c["hidden_act"], "encoder.hidden_act"),
                          c["layerscale_value"], c["qkv_bias"])
        grid = c["image_size"] // max(c["patch_size"], 1)
        spec = EncoderSpec("dinov2", block, c["num_hidden_layers"], c["patch_size"], c["num_channels"],
                           (grid, grid), "learned_cls", True)
    else:
        raise ConfigError(f"encoder.arch {arch!r} is not supported (vit, siglip, dinov2)")
    spec.block.validate("encoder")
    if spec.patch <= 0 or spec.depth <= 0:
        raise ConfigError("encoder patch size and depth must be positive")
    return spec


@dataclass
class TokenizerConfig:
    raw: dict
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    encoder: EncoderSpec
    quantizer: dict
    decoder: dict

    @property
    def grid(self) -> tuple[int, int]:
        g = self.image_size // max(self.encoder.patch, 1)
        return g, g

    @property
    def decoder_patch(self) -> int:
        return self.decoder["patch_size"] if self.decoder["patch_size"] is not None else self.encoder.patch


def parse_tokenizer_config(raw: dict) -> TokenizerConfig:
    top = {"image_size", "normalize", "encoder", "quantizer", "decoder"}
    if set(raw) != top:
        raise ConfigError(f"tokenizer config: fields {sorted(raw)}, expected exactly {sorted(top)}")
    norm = raw["normalize"]
    if set(norm) != {"mean", "std"} or len(norm["mean"]) != 3 or len(norm["std"]) != 3:
        raise ConfigError(f"tokenizer config: normalize must be {{mean: [3], std: [3]}}, got {norm}")
    enc = encoder_spec(raw["encoder"])
    quant = with_defaults("quantizer", raw["quantizer"], QUANTIZER_DEFAULTS)
    if quant["kind"] not in ("simvq", "vq"):
        raise ConfigError(f"quantizer.kind {quant['kind']!r} is not supported (simvq, vq)")
    if quant["codebook_size"] <= 0 or quant["dim"] <= 0:
        raise ConfigError("quantizer: codebook size and dim must be positive")
    dec = with_defaults("decoder", raw["decoder"], DECODER_DEFAULTS)
    BlockSpec(dec["hidden_size"], dec["num_heads"], int(dec["hidden_size"] * dec["mlp_ratio"]),
              dec["layer_norm_eps"], "erf", None, True).validate("decoder")
    if dec["hidden_size"] % 4:
        raise ConfigError("decoder width must be divisible by 4 (sin-cos positions)")
    if raw["image_size"] < enc.patch:
        raise ConfigError(f"image_size {raw['image_size']} is smaller than the encoder patch {enc.patch}")
    return TokenizerConfig(raw, raw["image_size"], tuple(norm["mean"]), tuple(norm["std"]), enc, quant, dec)


# --------------------------------------------------------------------------------------------
# Tokenizer modules
# --------------------------------------------------------------------------------------------


def sincos_2d(dim: int, rows: int, cols: int) -> torch.Tensor:
    """pos_embed.rs sincos_2d: (rows*cols, dim); first half row, second half column, each half
    [sin(pos*w), cos(pos*w)] with w_i = 10000^(-i/(dim/4)); computed in f64 like the Rust."""
    if dim % 4:
        raise ConfigError(f"sin-cos position embedding needs a width divisible by 4, got {dim}")
    q = dim // 4
    omega = 1.0 / 10000.0 ** (torch.arange(q, dtype=torch.float64) / q)
    r, c = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64),
                          indexing="ij")
    r, c = r.reshape(-1, 1) * omega, c.reshape(-1, 1) * omega
    return torch.cat([r.sin(), r.cos(), c.sin(), c.cos()], dim=1).float()


def resize_grid(table: torch.Tensor, src: tuple[int, int], dst: tuple[int, int]) -> torch.Tensor:
    """pos_embed.rs resize_grid with ResizeScale::Size: bicubic (A=-0.75), align_corners=False,
    clamped borders: PyTorch's own interpolate."""
    if src == dst:
        return table
    d = table.shape[-1]
    g = table.reshape(src[0], src[1], d).permute(2, 0, 1).unsqueeze(0)
    g = F.interpolate(g, size=dst, mode="bicubic", align_corners=False)
    return g.squeeze(0).permute(1, 2, 0).reshape(dst[0] * dst[1], d)


class Block(nn.Module):
    """vit.rs Block: x + ls1 * attn(norm1(x)); x + ls2 * mlp(norm2(x))."""

    def __init__(self, s: BlockSpec):
        super().__init__()
        d = s.dim
        self.heads, self.act = s.heads, s.act
        self.norm1 = nn.LayerNorm(d, eps=s.eps)
        self.q = nn.Linear(d, d, bias=s.qkv_bias)
        self.k = nn.Linear(d, d, bias=s.qkv_bias)
        self.v = nn.Linear(d, d, bias=s.qkv_bias)
        self.out = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, eps=s.eps)
        self.fc1 = nn.Linear(d, s.mlp_hidden)
        self.fc2 = nn.Linear(s.mlp_hidden, d)
        ls = s.layer_scale
        self.ls1 = nn.Parameter(torch.full((d,), float(ls))) if ls is not None else None
        self.ls2 = nn.Parameter(torch.full((d,), float(ls))) if ls is not None else None

    def names(self, prefix: str, n: dict) -> dict[str, str]:
        out = {}
        for attr in ("norm1", "q", "k", "v", "out", "norm2", "fc1", "fc2"):
            for p, _ in getattr(self, attr).named_parameters():
                out[f"{attr}.{p}"] = f"{prefix}.{n[attr]}.{p}"
        if self.ls1 is not None:
            out["ls1"], out["ls2"] = f"{prefix}.{n['ls1']}", f"{prefix}.{n['ls2']}"
        return out

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        split = lambda t: t.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        y = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)))  # 1/sqrt(hd)
        return self.out(y.transpose(1, 2).reshape(b, n, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.attention(self.norm1(x))
        x = x + (h * self.ls1 if self.ls1 is not None else h)
        h = self.fc2(F.gelu(self.fc1(self.norm2(x)), approximate="tanh" if self.act == "tanh" else "none"))
        return x + (h * self.ls2 if self.ls2 is not None else h)


class VitEncoder(nn.Module):
    """encoder/mod.rs VitEncoder: patch conv, positions, [class token], blocks, final LayerNorm;
    the output used downstream is the patch tokens of the normed last layer."""

    def __init__(self, s: EncoderSpec):
        super().__init__()
        self.spec = s
        d = s.width
        self.patch = nn.Conv2d(s.channels, d, s.patch, stride=s.patch)
        n = s.native_grid[0] * s.native_grid[1]
        self.cls = nn.Parameter(torch.zeros(1, 1, d)) if s.cls_token else None
        if s.pos == "learned":
            self.pos = nn.Parameter(torch.zeros(n, d))
        elif s.pos == "learned_cls":
            self.pos = nn.Parameter(torch.zeros(1, 1 + n, d))
        else:
            self.pos = None
        self.blocks = nn.ModuleList(Block(s.block) for _ in range(s.depth))
        self.norm = nn.LayerNorm(d, eps=s.block.eps)

    def names(self, prefix: str = "encoder") -> dict[str, str]:
        n = ENCODER_NAMES[self.spec.arch]
        out = {f"patch.{p}": f"{prefix}.{n['patch']}.{p}" for p in ("weight", "bias")}
        if self.cls is not None:
            out["cls"] = f"{prefix}.{n['cls']}"
        if self.pos is not None:
            out["pos"] = f"{prefix}.{n['pos']}"
        for i, blk in enumerate(self.blocks):
            out.update({f"blocks.{i}.{k}": v for k, v in blk.names(f"{prefix}.{n['blocks']}.{i}", n["block"]).items()})
        out.update({f"norm.{p}": f"{prefix}.{n['norm']}.{p}" for p in ("weight", "bias")})
        return out

    def position_table(self, grid: tuple[int, int]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        native = self.spec.native_grid
        if self.spec.pos == "learned_cls":
            p = self.pos[0]
            return resize_grid(p[1:], native, grid), p[:1]
        if self.spec.pos == "learned":
            return resize_grid(self.pos, native, grid), None
        return sincos_2d(self.spec.width, *grid).to(self.patch.weight), None

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) normalised pixels -> patch tokens (B, N, d)."""
        b, c, h, w = pixels.shape
        if c != self.spec.channels:
            raise ValueError(f"expected {self.spec.channels} image channels, got {c}")
        p = self.spec.patch
        grid = (h // p, w // p)
        x = self.patch(pixels).flatten(2).transpose(1, 2)
        table, cls_pos = self.position_table(grid)
        x = x + table
        if self.cls is not None:
            cls = self.cls + cls_pos if cls_pos is not None else self.cls
            x = torch.cat([cls.expand(b, 1, -1), x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return x[:, 1:] if self.cls is not None else x


class Quantizer(nn.Module):
    """quantizer.rs: SimVQ (frozen codebook C, codewords W(C)) or plain VQ; optional L2 lookup."""

    def __init__(self, q: dict):
        super().__init__()
        self.kind, self.beta, self.l2 = q["kind"], q["beta"], q["l2_normalize"]
        k, e = q["codebook_size"], q["dim"]
        self.codebook = nn.Parameter(torch.randn(k, e) * e ** -0.5)
        self.codebook_proj = nn.Linear(e, e) if self.kind == "simvq" else None

    def names(self, prefix: str = "quantizer") -> dict[str, str]:
        out = {"codebook": f"{prefix}.codebook"}
        if self.codebook_proj is not None:
            out.update({f"codebook_proj.{p}": f"{prefix}.codebook_proj.{p}" for p in ("weight", "bias")})
        return out

    def frozen(self) -> list[nn.Parameter]:
        return [self.codebook] if self.kind == "simvq" else []

    def codewords(self) -> torch.Tensor:
        cw = self.codebook_proj(self.codebook) if self.codebook_proj is not None else self.codebook
        return l2_normalize(cw) if self.l2 else cw

    @staticmethod
    def distances(z: torch.Tensor, cw: torch.Tensor) -> torch.Tensor:
        """|c_j|^2 - 2 z.c_j for rows of z (M, e): the L2 argmin without |z|^2."""
        return (cw * cw).sum(-1).unsqueeze(0) - 2.0 * (z @ cw.t())

    def forward(self, z: torch.Tensor):
        """z (B, N, e) -> (z_q with straight-through gradient, codes (B, N) int64, loss)."""
        b, n, e = z.shape
        cw = self.codewords()
        if self.l2:
            z = l2_normalize(z)
        # nearest codeword in float32 whatever the model's dtype: in bfloat16, |c|^2 - 2 z.c loses
        # the small gaps between codewords and flips codes (a no-op for float32 inputs)
        codes = self.distances(z.detach().reshape(b * n, e).float(), cw.detach().float()).argmin(-1)
        z_q = cw[codes].reshape(b, n, e)
        codebook_loss = (z.detach() - z_q).pow(2).mean()
        commit_loss = (z - z_q.detach()).pow(2).mean()
        z_st = z + (z_q - z).detach()
        return z_st, codes.reshape(b, n), codebook_loss + self.beta * commit_loss

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        k = self.codebook.shape[0]
        if int(codes.max()) >= k or int(codes.min()) < 0:
            raise ValueError(f"codes outside the codebook of {k} entries")
        return self.codewords()[codes]


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    return x / (x.pow(2).sum(-1, keepdim=True) + 1e-12).sqrt()


class Decoder(nn.Module):
    """decoder.rs: embed (e -> d), + sin-cos positions, pre-LN blocks, LayerNorm, head, unpatchify."""

    def __init__(self, dec: dict, input_dim: int, patch: int):
        super().__init__()
        d = dec["hidden_size"]
        spec = BlockSpec(d, dec["num_heads"], int(d * dec["mlp_ratio"]), dec["layer_norm_eps"], "erf", None, True)
        self.dim, self.p = d, patch
        self.embed = nn.Linear(input_dim, d)
        self.blocks = nn.ModuleList(Block(spec) for _ in range(dec["num_layers"]))
        self.norm = nn.LayerNorm(d, eps=dec["layer_norm_eps"])
        self.head = nn.Linear(d, 3 * patch * patch)

    def names(self, prefix: str = "decoder") -> dict[str, str]:
        out = {}
        for attr in ("embed", "norm", "head"):
            out.update({f"{attr}.{p}": f"{prefix}.{attr}.{p}" for p in ("weight", "bias")})
        for i, blk in enumerate(self.blocks):
            out.update({f"blocks.{i}.{k}": v for k, v in blk.names(f"{prefix}.blocks.{i}", OWN_BLOCK).items()})
        return out

    def forward(self, z_q: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, n, _ = z_q.shape
        gh, gw = grid
        if n != gh * gw:
            raise ValueError(f"{n} tokens do not fill a {gh}x{gw} grid")
        x = self.embed(z_q)
        x = x + sincos_2d(self.dim, gh, gw).to(x)
        for blk in self.blocks:
            x = blk(x)
        x = self.head(self.norm(x))
        p = self.p
        return x.reshape(b, gh, gw, 3, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, 3, gh * p, gw * p)


class Vqrae(nn.Module):
    """model.rs Vqrae: encoder -> proj_in -> quantizer; codes -> codewords -> decoder."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        e = cfg.quantizer["dim"]
        self.encoder = VitEncoder(cfg.encoder)
        self.proj_in = nn.Linear(cfg.encoder.width, e)
        self.quantizer = Quantizer(cfg.quantizer)
        self.decoder = Decoder(cfg.decoder, e, cfg.decoder_patch)

    def names(self) -> dict[str, str]:
        out = {}
        for attr, sub in (("encoder", self.encoder), ("quantizer", self.quantizer), ("decoder", self.decoder)):
            out.update({f"{attr}.{k}": v for k, v in sub.names().items()})
        out.update({f"proj_in.{p}": f"proj_in.{p}" for p in ("weight", "bias")})
        return out

    @classmethod
    def load(cls, directory: Path) -> "Vqrae":
        cfg = parse_tokenizer_config(json.loads((directory / "config.json").read_text()))
        model = cls(cfg)
        load_strict(model, float_tensors(directory / "model.safetensors"), model.names(), str(directory))
        return model.eval()

    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised pixels (B, 3, S, S) -> (features (B, N, d), codes (B, N))."""
        features = self.encoder(pixels)
        _, codes, _ = self.quantizer(self.proj_in(features))
        return features, codes

    def decode(self, codes: torch.Tensor, grid: Optional[tuple[int, int]] = None) -> torch.Tensor:
        return self.decoder(self.quantizer.lookup(codes), grid or self.cfg.grid)

    def forward_features(self, features: torch.Tensor):
        """Training forward from encoder features: (reconstruction, quantizer loss, codes)."""
        z_st, codes, qloss = self.quantizer(self.proj_in(features))
        return self.decoder(z_st, self.cfg.grid), qloss, codes

    def normalize_u8(self, images: np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) u8 -> (B, 3, H, W) with the same f32 arithmetic as images_to_tensor's LUT."""
        p = np.arange(256, dtype=np.float32) / np.float32(255.0)
        luts = [(p - np.float32(self.cfg.mean[c])) / np.float32(self.cfg.std[c]) for c in range(3)]
        out = np.stack([luts[c][images[..., c]] for c in range(3)], axis=1)
        return torch.from_numpy(np.ascontiguousarray(out))

    def to_u8(self, output: torch.Tensor) -> np.ndarray:
        """tensor_to_images: de-normalise, round (half away from zero), clamp -> (B, H, W, 3) u8."""
        x = output.detach().float().numpy()
        mean = np.asarray(self.cfg.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(self.cfg.std, dtype=np.float32).reshape(1, 3, 1, 1)
        v = (x * std + mean) * np.float32(255.0)
        v = np.sign(v) * np.floor(np.abs(v) + 0.5)
        return np.clip(np.nan_to_num(v, nan=0.0), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


# --------------------------------------------------------------------------------------------
# LLaMA (lm/src/model.rs = HF LlamaForCausalLM), hand-written, with a static KV cache
# --------------------------------------------------------------------------------------------


@dataclass
class LlamaSpec:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool


def parse_llama_config(raw: dict) -> LlamaSpec:
    """lm/src/config.rs: lenient about fields that do not change the computation, strict about
    those that would."""
    if raw.get("model_type", "llama") != "llama":
        raise ConfigError(f"model_type {raw['model_type']!r} is not supported (only \"llama\")")
    if raw.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"hidden_act {raw['hidden_act']!r} is not supported (only \"silu\")")
    if raw.get("attention_bias", False) or raw.get("mlp_bias", False):
        raise ConfigError("attention_bias / mlp_bias are not supported (LLaMA has no biases)")
    if raw.get("rope_scaling") is not None:
        raise ConfigError("rope_scaling is not supported (plain RoPE only)")
    theta = raw.get("rope_theta")
    params = raw.get("rope_parameters")
    if params is not None:
        if params.get("rope_type", "default") != "default":
            raise ConfigError(f"rope_type {params['rope_type']!r} is not supported (plain RoPE only)")
        theta = theta if theta is not None else params.get("rope_theta")
    heads = raw["num_attention_heads"]
    kv = raw.get("num_key_value_heads") or heads
    if heads % kv:
        raise ConfigError(f"{heads} attention heads are not a multiple of {kv} kv heads")
    return LlamaSpec(raw["vocab_size"], raw["hidden_size"], raw["intermediate_size"], raw["num_hidden_layers"],
                     heads, kv, raw.get("head_dim") or raw["hidden_size"] // heads, raw.get("rms_norm_eps", 1e-6),
                     float(theta if theta is not None else 10000.0), raw.get("max_position_embeddings", 2048),
                     bool(raw.get("tie_word_embeddings", False)))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the mean square in float32 whatever x's dtype, as HF LlamaRMSNorm (a no-op in float32)
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


class KVCache:
    """LlamaGen's static cache: per layer (rows, kv_heads, max_len, head_dim) buffers written in
    place; attention reads the filled prefix."""

    def __init__(self, spec: LlamaSpec, rows: int, max_len: int, device=None, dtype=None):
        shape = (rows, spec.num_key_value_heads, max_len, spec.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(spec.num_hidden_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(spec.num_hidden_layers)]
        self.max_len = max_len


class LlamaAttention(nn.Module):
    def __init__(self, s: LlamaSpec):
        super().__init__()
        self.h, self.kv, self.hd = s.num_attention_heads, s.num_key_value_heads, s.head_dim
        self.q_proj = nn.Linear(s.hidden_size, self.h * self.hd, bias=False)
        self.k_proj = nn.Linear(s.hidden_size, self.kv * self.hd, bias=False)
        self.v_proj = nn.Linear(s.hidden_size, self.kv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.h * self.hd, s.hidden_size, bias=False)

    def forward(self, x, cos, sin, cache: Optional[KVCache], layer: int, start: int) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:
            pos = torch.arange(start, start + t, device=x.device)
            cache.k[layer].index_copy_(2, pos, k)
            cache.v[layer].index_copy_(2, pos, v)
            k, v = cache.k[layer][:, :, : start + t], cache.v[layer][:, :, : start + t]
        groups = self.h // self.kv
        if groups > 1:  # HF repeat_kv: query head i reads kv head i // groups
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        if t == 1:
            y = F.scaled_dot_product_attention(q, k, v)
        elif start == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            qpos = torch.arange(start, start + t, device=x.device).unsqueeze(1)
            mask = torch.arange(start + t, device=x.device).unsqueeze(0) <= qpos
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, self.h * self.hd))


class LlamaLayer(nn.Module):
    def __init__(self, s: LlamaSpec):
        super().__init__()
        self.input_layernorm = RMSNorm(s.hidden_size, s.rms_norm_eps)
        self.self_attn = LlamaAttention(s)
        self.post_attention_layernorm = RMSNorm(s.hidden_size, s.rms_norm_eps)
        self.gate_proj = nn.Linear(s.hidden_size, s.intermediate_size, bias=False)
        self.up_proj = nn.Linear(s.hidden_size, s.intermediate_size, bias=False)
        self.down_proj = nn.Linear(s.intermediate_size, s.hidden_size, bias=False)

    def forward(self, x, cos, sin, cache, layer, start):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, layer, start)
        m = self.post_attention_layernorm(h)
        return h + self.down_proj(F.silu(self.gate_proj(m)) * self.up_proj(m))


class Llama(nn.Module):
    def __init__(self, s: LlamaSpec):
        super().__init__()
        self.spec = s
        self.embed_tokens = nn.Embedding(s.vocab_size, s.hidden_size)
        self.layers = nn.ModuleList(LlamaLayer(s) for _ in range(s.num_hidden_layers))
        self.norm = RMSNorm(s.hidden_size, s.rms_norm_eps)
        self.lm_head = None if s.tie_word_embeddings else nn.Linear(s.hidden_size, s.vocab_size, bias=False)
        inv_freq = 1.0 / (s.rope_theta ** (torch.arange(0, s.head_dim, 2, dtype=torch.int64).float() / s.head_dim))
        angles = torch.arange(s.max_position_embeddings).float().unsqueeze(1) * inv_freq.unsqueeze(0)
        emb = torch.cat([angles, angles], dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def names(self) -> dict[str, str]:
        out = {"embed_tokens.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}
        for i in range(self.spec.num_hidden_layers):
            p = f"model.layers.{i}"
            for n in ("input_layernorm", "post_attention_layernorm"):
                out[f"layers.{i}.{n}.weight"] = f"{p}.{n}.weight"
            for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
                out[f"layers.{i}.self_attn.{n}.weight"] = f"{p}.self_attn.{n}.weight"
            for n in ("gate_proj", "up_proj", "down_proj"):
                out[f"layers.{i}.{n}.weight"] = f"{p}.mlp.{n}.weight"
        if self.lm_head is not None:
            out["lm_head.weight"] = "lm_head.weight"
        return out

    @classmethod
    def load(cls, directory: Path) -> "Llama":
        spec = parse_llama_config(json.loads((directory / "config.json").read_text()))
        model = cls(spec)
        names = model.names()
        names.update({b: b for b in ("cos", "sin")})  # computed buffers, not in the file
        tensors = float_tensors(directory / "model.safetensors")
        tensors.update({"cos": model.cos, "sin": model.sin})
        load_strict(model, tensors, names, str(directory))
        return model.eval()

    def new_cache(self, rows: int, max_len: int) -> KVCache:
        """An empty static cache on the weights' device, in their dtype."""
        w = self.embed_tokens.weight
        return KVCache(self.spec, rows, max_len, device=w.device, dtype=w.dtype)

    def hidden(self, ids: torch.Tensor, cache: Optional[KVCache] = None, start: int = 0) -> torch.Tensor:
        """(B, T) ids at positions start..start+T -> final-normed hidden states (B, T, d)."""
        t = ids.shape[1]
        if start + t > self.spec.max_position_embeddings:
            raise ValueError(f"position {start + t} beyond max_position_embeddings")
        cos, sin = self.cos[start: start + t], self.sin[start: start + t]
        x = self.embed_tokens(ids)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, cache, i, start)
        return self.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        w = self.lm_head.weight if self.lm_head is not None else self.embed_tokens.weight
        return hidden @ w.t()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.logits(self.hidden(ids))


@dataclass
class CodeRange:
    start: int
    end: int
    image_tokens: int


def code_range(directory: Path, lm: LlamaSpec) -> CodeRange:
    """bench.json if present; else vocab.rs (vocab = text + codebook + 3 markers) with the
    codebook size and grid of DIR/tokenizer/config.json, cross-checked with unified.json if there."""
    bench = directory / "bench.json"
    if bench.exists():
        b = json.loads(bench.read_text())
        missing = [k for k in ("code_start", "code_end", "image_tokens") if k not in b]
        if missing:
            raise ConfigError(f"{bench}: missing {missing}")
        return CodeRange(b["code_start"], b["code_end"], b["image_tokens"])
    tok = parse_tokenizer_config(json.loads((directory / "tokenizer" / "config.json").read_text()))
    k = tok.quantizer["codebook_size"]
    text = lm.vocab_size - k - 3
    if text < 1:
        raise ConfigError(f"LM vocab {lm.vocab_size} cannot hold {k} codes + 3 markers + text")
    unified = directory / "unified.json"
    if unified.exists():
        v = json.loads(unified.read_text())["vocab"]
        if (v["text"], v["codes"]) != (text, k):
            raise ConfigError(f"{unified}: vocab {v} disagrees with LM vocab {lm.vocab_size} - {k} codes - 3")
    g = tok.grid
    return CodeRange(text, text + k, g[0] * g[1])


@torch.inference_mode()
def generate(lm: Llama, prompts: torch.Tensor, cr: CodeRange, guidance: Optional[float],
             gen: torch.Generator, temperature: float = 1.0) -> torch.Tensor:
    """LlamaGen-style sampling of cr.image_tokens codes. ``prompts`` (rows, L): with guidance the
    first half of the rows is conditional, the second half unconditional. Returns (B, N) codes.
    ``gen`` must live on the device of ``prompts`` (torch.multinomial draws there). Guidance and
    the softmax run in float32 whatever the model's dtype, as HF generate does (a no-op in float32)."""
    rows, l = prompts.shape
    b = rows // 2 if guidance is not None else rows
    cache = lm.new_cache(rows, l + cr.image_tokens)
    logits = lm.logits(lm.hidden(prompts, cache, 0)[:, -1]).float()
    out = torch.empty(b, cr.image_tokens, dtype=torch.long, device=prompts.device)
    for step in range(cr.image_tokens):
        if guidance is not None:  # guidance first, then the restriction to the codes
            c, u = logits[:b], logits[b:]
            logits = u + guidance * (c - u)
        probs = torch.softmax(logits[:, cr.start: cr.end] / temperature, dim=-1)
        code = torch.multinomial(probs, 1, generator=gen)  # (B, 1)
        out[:, step] = code[:, 0]
        if step + 1 == cr.image_tokens:
            break
        nxt = code + cr.start
        if guidance is not None:
            nxt = torch.cat([nxt, nxt], dim=0)
        logits = lm.logits(lm.hidden(nxt, cache, l + step)[:, -1]).float()
    return out


# --------------------------------------------------------------------------------------------
# Training steps
# --------------------------------------------------------------------------------------------


def tok_stage1_step(model: Vqrae, teacher: VitEncoder, opt: torch.optim.Optimizer, params, x, target):
    """One stage-1 step (train.rs): features = cached teacher features of x."""
    recon, qloss, _ = model.forward_features(target)
    total = TOK_LOSS["l2"] * (recon - x).pow(2).mean() + TOK_LOSS["quant"] * qloss
    total = total + TOK_LOSS["perceptual"] * (teacher(recon) - target).pow(2).mean()
    opt.zero_grad(set_to_none=True)
    total.backward()
    torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
    opt.step()
    return total.detach()


def lm_step(lm: Llama, opt: torch.optim.Optimizer, ids: torch.Tensor):
    logits = lm(ids[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(lm.parameters(), GRAD_CLIP)
    opt.step()
    return loss.detach()


def stage1_trainable(model: Vqrae) -> list[nn.Parameter]:
    """Stage 1 trains everything but the encoder and SimVQ's codebook."""
    frozen = {id(p) for p in model.encoder.parameters()} | {id(p) for p in model.quantizer.frozen()}
    return [p for p in model.parameters() if id(p) not in frozen]


# --------------------------------------------------------------------------------------------
# run: time one row
# --------------------------------------------------------------------------------------------


def random_pixels(cfg: TokenizerConfig, b: int, gen: torch.Generator) -> torch.Tensor:
    s = cfg.image_size
    u8 = torch.randint(0, 256, (b, s, s, 3), generator=gen, dtype=torch.uint8).numpy()
    mean = np.asarray(cfg.mean, dtype=np.float32)
    std = np.asarray(cfg.std, dtype=np.float32)
    x = (u8.astype(np.float32) / np.float32(255.0) - mean) / std
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def timed(fn: Callable[[], object], iters: Optional[int], warmup: int = 2, target_s: float = 3.0,
          device: Optional[torch.device] = None, profile: bool = False):
    """Warm-up, then ``iters`` timed calls (default: enough for ~target_s, at least 3). On CUDA every
    call is followed by torch.cuda.synchronize, so that the GPU work it queued is inside the timing."""
    sync = device is not None and device.type == "cuda"

    def call():
        fn()
        if sync:
            torch.cuda.synchronize(device)

    per = 0.0
    for _ in range(warmup):
        t0 = time.perf_counter()
        call()
        per = time.perf_counter() - t0
    if iters is None:
        iters = max(3, math.ceil(target_s / max(per, 1e-6)))
    if profile:  # the timed calls alone inside the CUDA profiler's window (ncu --profile-from-start off)
        torch.cuda.synchronize(device)
        torch.cuda.profiler.start()
    t0 = time.perf_counter()
    for _ in range(iters):
        call()
    seconds = (time.perf_counter() - t0) / iters
    if profile:
        torch.cuda.profiler.stop()
    return seconds, iters


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def setup_device(name: str) -> torch.device:
    """``cpu`` or ``cuda``; on CUDA, float32 means float32: TF32 is turned off for matmuls and cuDNN
    convolutions, to compare like for like with the Rust f32 path (and to keep check's tolerances)."""
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: torch sees no CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    elif dev.type != "cpu":
        raise ValueError(f"device {name!r} is not supported (cpu, cuda)")
    return dev


def row_dtype(row: str, dev: torch.device, dtype: str) -> torch.dtype:
    """``auto``: bfloat16 for the inference rows on CUDA, float32 otherwise. Training rows are
    float32 only (the Rust training path is f32)."""
    training = row.startswith("train_")
    if dtype == "auto":
        return torch.bfloat16 if dev.type == "cuda" and not training else torch.float32
    if training and dtype != "float32":
        raise ConfigError(f"{row}: training rows run in float32 only, not {dtype}")
    return DTYPES[dtype]


def run_row(directory: Path, row: str, b: int, iters: Optional[int], prefill_logits: str = "last",
            device: str = "cpu", dtype: str = "auto", seconds: float = 3.0, profile: bool = False) -> dict:
    dev = setup_device(device)
    dt = row_dtype(row, dev, dtype)
    gen = torch.Generator().manual_seed(0)  # inputs are drawn on the CPU: the same on every device

    def put(t: torch.Tensor) -> torch.Tensor:
        """An input onto the device; float inputs in the row's dtype, integer ids unchanged."""
        return t.to(dev, dt) if t.is_floating_point() else t.to(dev)

    if row.startswith(("tok_", "train_tok")):
        model = Vqrae.load(directory / "tokenizer").to(dev, dt)
        cfg = model.cfg
        gh, gw = cfg.grid
        if row == "tok_encode":
            x = put(random_pixels(cfg, b, gen))

            def fn():
                with torch.inference_mode():
                    return model.encode(x)
            work, unit = b, "images/s"
        elif row == "tok_decode":
            codes = put(torch.randint(0, cfg.quantizer["codebook_size"], (b, gh * gw), generator=gen))

            def fn():
                with torch.inference_mode():
                    return model.decode(codes)
            work, unit = b, "images/s"
        else:
            model.train()
            teacher = model.encoder  # frozen: same weights, no parameter of it is trained in stage 1
            for p in teacher.parameters():
                p.requires_grad_(False)
            for p in model.quantizer.frozen():
                p.requires_grad_(False)
            params = stage1_trainable(model)
            opt = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=TOK_WEIGHT_DECAY)
            x = put(random_pixels(cfg, b, gen))
            with torch.no_grad():
                target = teacher(x)  # training caches the teacher features of its images

            def fn():
                return tok_stage1_step(model, teacher, opt, params, x, target)
            work, unit = b, "samples/s"
    elif row == "train_lora":
        base = lora_reference.base_dir(directory)
        lm = Llama.load(base).to(dev, dt).train()
        cr = code_range(directory, lm.spec)
        init = float_tensors(base / lora_reference.ADAPTERS_INIT)
        # the Rust row's start: the same A, B = 0
        params = lora_reference.attach(lm, {k: t.to(dev) for k, t in init.items()}, zero_b=True)
        opt = lora_reference.optimizer(params)
        ids = put(torch.randint(0, lm.spec.vocab_size, (b, PREFILL_TEXT + cr.image_tokens), generator=gen))

        def fn():
            return lora_reference.step(lm, opt, params, ids)
        work, unit = b, "samples/s"
    else:
        lm = Llama.load(directory / "lm").to(dev, dt)
        cr = code_range(directory, lm.spec)
        v = lm.spec.vocab_size
        if row == "lm_prefill":
            ids = put(torch.randint(0, v, (b, PREFILL_TEXT + cr.image_tokens), generator=gen))

            def fn():
                with torch.inference_mode():
                    h = lm.hidden(ids)
                    # generation's prefill needs the last position's logits only
                    return lm.logits(h[:, -1] if prefill_logits == "last" else h)
            work, unit = b * ids.shape[1], "tokens/s"
        elif row == "lm_decode":
            rows = b if b == 1 else 2 * b
            guidance = None if b == 1 else GUIDANCE
            prompts = put(torch.randint(0, cr.start, (rows, DECODE_PROMPT), generator=gen))
            # multinomial's generator lives with the logits; on the CPU it is the input one, as before
            sampler = gen if dev.type == "cpu" else torch.Generator(device=dev).manual_seed(0)

            def fn():
                return generate(lm, prompts, cr, guidance, sampler)
            work, unit = b * cr.image_tokens, "tokens/s"
        elif row == "train_lm":
            lm.train()
            opt = torch.optim.AdamW(lm.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8,
                                    weight_decay=LM_WEIGHT_DECAY)
            ids = put(torch.randint(0, v, (b, PREFILL_TEXT + cr.image_tokens + 1), generator=gen))

            def fn():
                return lm_step(lm, opt, ids)
            work, unit = b, "samples/s"
        else:
            raise ValueError(f"unknown row {row!r} (rows: {', '.join(ROWS)})")
    if dev.type == "cuda":  # the peak from here on: weights, optimizer state, activations
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    seconds, n = timed(fn, iters, target_s=seconds, device=dev, profile=profile)
    out = {"impl": "pytorch", "row": row, "batch": b, "device": dev.type, "dtype": str(dt).split(".")[-1],
           "unit": unit, "per_sec": work / seconds, "seconds_per_iter": seconds, "iters": n,
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if dev.type == "cuda":
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return out


# --------------------------------------------------------------------------------------------
# check: agreement with the Rust outputs
# --------------------------------------------------------------------------------------------


def diff(ours: torch.Tensor, ref: torch.Tensor, tol: float, scaled: bool = True) -> dict:
    """max |ours - ref| against tol * max(1, max |ref|) (``scaled``) or against tol (on the CPU)."""
    ours, ref = ours.detach().cpu(), ref.detach().cpu()
    if tuple(ours.shape) != tuple(ref.shape):
        return {"ok": False, "error": f"shape {tuple(ours.shape)} vs expected {tuple(ref.shape)}"}
    d = (ours.double() - ref.double()).abs()
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    max_abs = float(d.max()) if d.numel() else 0.0
    tol_abs = tol * max(1.0, scale) if scaled else tol
    return {"ok": bool(max_abs <= tol_abs), "max_abs": max_abs, "max_rel": max_abs / max(scale, 1e-30),
            "mean_abs": float(d.mean()) if d.numel() else 0.0, "scale": scale, "tol_abs": tol_abs}


def code_agreement(model: Vqrae, features: torch.Tensor, ours: torch.Tensor, ref: torch.Tensor, need: float) -> dict:
    if tuple(ours.shape) != tuple(ref.shape):
        return {"ok": False, "error": f"shape {tuple(ours.shape)} vs expected {tuple(ref.shape)}"}
    ref = ref.to(ours.device)
    same = (ours == ref)
    rate = float(same.double().mean())
    out = {"ok": rate >= need, "agreement": rate, "mismatches": int((~same).sum()), "total": same.numel()}
    if not bool(same.all()):
        # How close to a tie each mismatch is, in our distances: (d(ref) - d(ours)) / |d(ours)|.
        with torch.no_grad():
            z = model.proj_in(features)
            if model.quantizer.l2:
                z = l2_normalize(z)
            e = z.shape[-1]
            dist = Quantizer.distances(z.reshape(-1, e), model.quantizer.codewords()) \
                + z.reshape(-1, e).pow(2).sum(-1, keepdim=True)
            idx = (~same).reshape(-1).nonzero()[:, 0]
            d_ours = dist[idx, ours.reshape(-1)[idx]]
            d_ref = dist[idx, ref.reshape(-1)[idx]]
            out["mismatch_max_rel_gap"] = float(((d_ref - d_ours) / d_ours.abs().clamp_min(1e-12)).max())
    return out


def as_long(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.astype(np.int64))


def check(directory: Path, device: str = "cpu") -> int:
    """On CUDA too the comparisons run in float32 (TF32 off, see setup_device), tolerances unchanged."""
    dev = setup_device(device)
    torch.manual_seed(0)
    inputs = read_safetensors(directory / "inputs.safetensors")
    expected = read_safetensors(directory / "expected.safetensors")
    for name, src, keys in (("inputs", inputs, ("pixels", "codes", "ids")),
                            ("expected", expected, ("features", "codes", "decoded", "logits"))):
        missing = [k for k in keys if k not in src]
        if missing:
            raise KeyError(f"{directory}/{name}.safetensors lacks {missing}")
    report: dict = {"dir": str(directory), "torch": torch.__version__, "device": dev.type}
    tok = Vqrae.load(directory / "tokenizer").to(dev)
    pixels = torch.from_numpy(inputs["pixels"].astype(np.float32)).to(dev)
    with torch.inference_mode():
        feats, codes = tok.encode(pixels)
        decoded = tok.decode(as_long(inputs["codes"]).to(dev))
        report["features"] = diff(feats, torch.from_numpy(expected["features"]), 1e-3)
        report["codes"] = code_agreement(tok, feats, codes, as_long(expected["codes"]), 0.99)
        report["decoded"] = diff(decoded, torch.from_numpy(expected["decoded"]), 1e-3)

    lm = Llama.load(directory / "lm").to(dev)
    ids = as_long(inputs["ids"]).to(dev)
    ref_logits = torch.from_numpy(expected["logits"])
    with torch.inference_mode():
        ours = lm(ids)
        report["logits"] = diff(ours, ref_logits, 1e-3, scaled=False)
        # the static-cache path (prefill half, then one token at a time) must give the same logits
        cache = lm.new_cache(ids.shape[0], ids.shape[1])
        half = max(1, ids.shape[1] // 2)
        parts = [lm.logits(lm.hidden(ids[:, :half], cache, 0))]
        parts += [lm.logits(lm.hidden(ids[:, t: t + 1], cache, t)) for t in range(half, ids.shape[1])]
        report["logits_kv_cache_vs_full"] = diff(torch.cat(parts, dim=1), ours, 1e-4)
    hf = hf_logits(directory / "lm", ids)
    report["logits_ours_vs_transformers"] = diff(ours, hf, 1e-4)
    report["logits_transformers_vs_expected"] = diff(hf, ref_logits, 1e-3, scaled=False)
    base = directory / lora_reference.LORA_DIR
    if base.exists() and "lora_losses" in expected:  # the train_lora row's model, two steps
        report["lora"] = lora_reference.check(
            Llama.load(base).to(dev), float_tensors(base / lora_reference.ADAPTERS_INIT),
            as_long(inputs["lora_ids"]).to(dev), torch.from_numpy(expected["lora_losses"]),
            torch.from_numpy(expected["lora_grad_norms"]))
    failures = [k for k, v in report.items() if isinstance(v, dict) and not v.get("ok", True)]
    report["ok"] = not failures
    report["failures"] = failures
    print(json.dumps(report, indent=2))
    return 0 if not failures else 1


def hf_logits(lm_dir: Path, ids: torch.Tensor) -> torch.Tensor:
    from transformers import LlamaConfig, LlamaForCausalLM  # only check needs transformers
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    # built from the config and loaded by hand: from_pretrained of some transformers versions
    # (4.46) refuses a safetensors file without metadata, which candle writes
    config = LlamaConfig.from_pretrained(str(lm_dir), attn_implementation="eager")
    model = LlamaForCausalLM(config).float()
    missing, unexpected = model.load_state_dict(float_tensors(lm_dir / "model.safetensors"), strict=False)
    if unexpected or set(missing) - ({"lm_head.weight"} if config.tie_word_embeddings else set()):
        raise ConfigError(f"{lm_dir}: tensors missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model = model.to(ids.device).eval()
    with torch.inference_mode():
        return model(input_ids=ids).logits.float()


# --------------------------------------------------------------------------------------------
# fixtures: a tiny own-ViT tokenizer with random weights, for the Rust tests
# --------------------------------------------------------------------------------------------


def tiny_config(arch: str) -> dict:
    if arch == "vit":
        enc = {"arch": "vit", "hidden_size": 32, "num_layers": 2, "num_heads": 4, "mlp_ratio": 4.0, "patch_size": 4,
               "image_size": 16, "layer_norm_eps": 1e-6, "pos_embed": "learned", "layer_scale": None}
    elif arch == "vit-ls-sincos":  # the other own-ViT options
        enc = {"arch": "vit", "hidden_size": 32, "num_layers": 2, "num_heads": 4, "mlp_ratio": 2.0, "patch_size": 4,
               "image_size": 16, "layer_norm_eps": 1e-6, "pos_embed": "sincos", "layer_scale": 0.5}
    elif arch == "siglip":
        enc = {"arch": "siglip", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_channels": 3, "image_size": 16, "patch_size": 4,
               "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6}
    elif arch == "dinov2":
        enc = {"arch": "dinov2", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
               "mlp_ratio": 2.0, "patch_size": 4, "image_size": 16, "num_channels": 3, "layer_norm_eps": 1e-6,
               "layerscale_value": 1.0, "hidden_act": "gelu", "qkv_bias": True, "use_swiglu_ffn": False}
    else:
        raise ConfigError(f"fixtures: unknown arch {arch!r}")
    return {"image_size": 16, "normalize": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}, "encoder": enc,
            "quantizer": {"kind": "simvq", "codebook_size": 64, "dim": 16, "beta": 0.25, "l2_normalize": False},
            "decoder": {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "mlp_ratio": 4.0, "patch_size": None,
                        "layer_norm_eps": 1e-6}}


def randomise(model: Vqrae, gen: torch.Generator):
    """Every tensor drawn so that a mis-loaded one changes the outputs: linear weights
    U(+-1/sqrt(fan_in)) * 1.5, biases N(0, 0.1), LayerNorm weights 1 + N(0, 0.2), positions N(0, 0.5),
    LayerScale 0.5 + N(0, 0.2), SimVQ codebook N(0, 1/e)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            n = torch.randn(p.shape, generator=gen)
            if name == "quantizer.codebook":
                p.copy_(n * p.shape[1] ** -0.5)
            elif ("norm" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * n)
            elif name.endswith((".ls1", ".ls2")):
                p.copy_(0.5 + 0.2 * n)
            elif name.endswith("bias"):
                p.copy_(0.1 * n)
            elif name.endswith(("pos", "cls")):
                p.copy_(0.5 * n)
            else:
                fan_in = p[0].numel()
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * 1.5 / math.sqrt(fan_in))


def simvq_data_init(model: Vqrae, z: torch.Tensor, gen: torch.Generator):
    """quantizer.rs data_init for SimVQ: bias = mean(z), weight = (z - mean)^T G, G ~ N(0, 1/M)."""
    m = z.shape[0]
    mean = z.mean(0, keepdim=True)
    g = torch.randn(m, z.shape[1], generator=gen) / math.sqrt(m)
    with torch.no_grad():
        model.quantizer.codebook_proj.weight.copy_((z - mean).t() @ g)
        model.quantizer.codebook_proj.bias.copy_(mean[0])


def min_code_margin(model: Vqrae, features: torch.Tensor) -> float:
    """Smallest (second-best - best) L2^2 distance over the tokens, relative to the best."""
    z = model.proj_in(features).reshape(-1, model.cfg.quantizer["dim"])
    d = Quantizer.distances(z, model.quantizer.codewords()) + z.pow(2).sum(-1, keepdim=True)
    two = d.topk(2, dim=-1, largest=False).values
    return float(((two[:, 1] - two[:, 0]) / two[:, 0].abs().clamp_min(1e-12)).min())


def write_png(path: Path, rgb: np.ndarray):
    from PIL import Image  # only fixtures / cli-check need pillow
    Image.fromarray(rgb, mode="RGB").save(path)


def fixtures(out: Path, arch: str, seed: int) -> int:
    from safetensors.numpy import save_file

    raw = tiny_config(arch)
    cfg = parse_tokenizer_config(raw)
    for attempt in range(200):
        gen = torch.Generator().manual_seed(seed + attempt)
        model = Vqrae(cfg)
        randomise(model, gen)
        model.eval()
        s = cfg.image_size
        images = torch.randint(0, 256, (2, s, s, 3), generator=gen, dtype=torch.uint8).numpy()
        calib = torch.randint(0, 256, (32, s, s, 3), generator=gen, dtype=torch.uint8).numpy()
        with torch.no_grad():
            z = model.proj_in(model.encoder(model.normalize_u8(calib))).reshape(-1, cfg.quantizer["dim"])
            simvq_data_init(model, z, gen)
            pixels = model.normalize_u8(images)
            features, codes = model.encode(pixels)
            decoded = model.decode(codes)
            margin = min_code_margin(model, features)
        if margin > 1e-3 and codes.unique().numel() >= 8:
            break
    else:
        raise RuntimeError("no seed gave codes with a clear margin; change --seed")
    tok_dir = out / "tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    (tok_dir / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
    weights = {k: v.numpy() for k, v in export_state(model, model.names()).items()}
    save_file(weights, str(tok_dir / "model.safetensors"))
    io = {"pixels": pixels.numpy(), "features": features.numpy(), "codes": codes.numpy().astype(np.uint32),
          "decoded": decoded.numpy()}
    save_file({k: np.ascontiguousarray(v) for k, v in io.items()}, str(out / "io.safetensors"))
    (out / "images").mkdir(exist_ok=True)
    for i, img in enumerate(images):
        write_png(out / "images" / f"{i}.png", img)
    # the written directory must load back to the same outputs
    again = Vqrae.load(tok_dir)
    with torch.no_grad():
        f2, c2 = again.encode(pixels)
        assert torch.equal(f2, features) and torch.equal(c2, codes) and torch.equal(again.decode(codes), decoded)
    cmd = f"/root/.venvs/ref/bin/python scripts/perf/reference.py fixtures --out {out}" + \
        (f" --arch {arch}" if arch != "vit" else "") + (f" --seed {seed}" if seed else "")
    (out / "README.md").write_text(FIXTURE_README.format(
        torch=torch.__version__, numpy=np.__version__, python=sys.version.split()[0], cmd=cmd, seed=seed + attempt,
        margin=margin, ncodes=codes.unique().numel(), arch=arch, enc=json.dumps(raw["encoder"])))
    print(json.dumps({"out": str(out), "arch": arch, "seed_used": seed + attempt, "min_code_margin": margin,
                      "distinct_codes": int(codes.unique().numel()), "codes": codes.tolist()}))
    return 0


FIXTURE_README = """# VQRAE tokenizer parity fixture (PyTorch reference)

Generated by `scripts/perf/reference.py` (torch {torch}, numpy {numpy}, Python {python}):

    {cmd}

Random weights (seed {seed}), not a trained model. Contents:

* `tokenizer/config.json`, `tokenizer/model.safetensors`: a tiny tokenizer in the project's own
  checkpoint format (loads with `Vqrae::load`); encoder `{arch}`: {enc};
  SimVQ codebook 64 x 16 (its map `W` data-initialised as `Quantizer::data_init` does, so the codes
  spread), decoder width 32, 2 layers, patch 4 (the encoder's), 16x16 images.
* `io.safetensors`: `pixels` f32 (2,3,16,16), the normalised input (random u8 images through the
  `images_to_tensor` arithmetic, mean = std = 0.5); `features` f32 (2,16,32), the encoder's normed
  last-layer patch tokens; `codes` u32 (2,16), the quantised codes; `decoded` f32 (2,3,16,16), the
  decoder output of those codes.
* `images/{{0,1}}.png`: the same two images as PNG (for `vqrae tokenize` / `reconstruct`).

Agreement to expect from the Rust side: features and decoded within ~1e-5 absolute, codes equal
(the smallest relative gap between the best and second-best codeword is {margin:.2e}, so a tie
cannot flip them; {ncodes} distinct codes).
"""


# --------------------------------------------------------------------------------------------
# cli-check: the tokenizer port against the vqrae CLI on real images
# --------------------------------------------------------------------------------------------


def read_png(path: Path) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(path).convert("RGB"))


def cli_check(model_dir: Path, images: list[Path], vqrae: Path, reconstruct: int) -> int:
    model = Vqrae.load(model_dir)
    s = model.cfg.image_size
    arrays = [read_png(p) for p in images]
    bad = [str(p) for p, a in zip(images, arrays) if a.shape[:2] != (s, s)]
    if bad:
        raise ValueError(f"images must be {s}x{s} (resizing is not reproduced here): {bad[:4]}")
    res = subprocess.run([str(vqrae), "tokenize", "--model", str(model_dir), *map(str, images)],
                         check=True, capture_output=True, text=True)
    rust_codes = torch.tensor([sum(json.loads(line)["codes"], []) for line in res.stdout.splitlines() if line.strip()])
    x = model.normalize_u8(np.stack(arrays))
    with torch.inference_mode():
        feats, codes = model.encode(x)
        report = {"images": len(images),
                  "codes": code_agreement(model, feats, codes, rust_codes, 0.99)}
        n = min(reconstruct, len(images))
        ours = model.to_u8(model.decode(codes[:n]))
        ours_rust_codes = model.to_u8(model.decode(rust_codes[:n]))
    diffs, diffs_same_codes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            out = Path(tmp) / f"{i}.png"
            subprocess.run([str(vqrae), "reconstruct", "--model", str(model_dir), "--out", str(out), str(images[i])],
                           check=True, capture_output=True)
            rust = read_png(out).astype(np.int16)
            diffs.append(np.abs(rust - ours[i].astype(np.int16)))
            diffs_same_codes.append(np.abs(rust - ours_rust_codes[i].astype(np.int16)))
    if n:
        d, ds = np.stack(diffs), np.stack(diffs_same_codes)
        report["reconstruct"] = {"images": n, "max_u8_diff": int(d.max()), "mean_u8_diff": float(d.mean()),
                                 "share_pixels_diff_gt1": float((d > 1).mean()),
                                 "max_u8_diff_decoding_rust_codes": int(ds.max()),
                                 "ok": bool(ds.max() <= 2)}
    report["ok"] = all(v.get("ok", True) for v in report.values() if isinstance(v, dict))
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


# --------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="agreement with DIR/expected.safetensors (exit 1 outside tolerance)")
    c.add_argument("--dir", type=Path, required=True)
    c.add_argument("--threads", type=int)
    c.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to compute (float32 on both)")
    r = sub.add_parser("run", help="time one row, print one JSON line")
    r.add_argument("--dir", type=Path, required=True)
    r.add_argument("--row", choices=ROWS, required=True)
    r.add_argument("--batch", type=int, required=True)
    r.add_argument("--iters", type=int, help="timed iterations (default: --seconds worth, at least 3)")
    r.add_argument("--seconds", type=float, default=3.0, help="seconds of timed calls to aim for without --iters")
    r.add_argument("--profile", action="store_true",
                   help="open the CUDA profiler's window around the timed calls only (use with --iters 1)")
    r.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    r.add_argument("--prefill-logits", choices=("last", "all"), default="last",
                   help="lm_prefill: logits of the last position (as generation) or of all positions")
    r.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    r.add_argument("--dtype", choices=("auto",) + tuple(DTYPES), default="auto",
                   help="inference rows' precision; auto: bfloat16 on cuda, float32 on cpu "
                        "(training rows: float32 only)")
    f = sub.add_parser("fixtures", help="tiny random tokenizer + PyTorch outputs for the Rust tests")
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--arch", default="vit", choices=("vit", "vit-ls-sincos", "siglip", "dinov2"))
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--threads", type=int)
    k = sub.add_parser("cli-check", help="codes / reconstructions against the vqrae CLI")
    k.add_argument("--model", type=Path, required=True, help="tokenizer checkpoint directory")
    k.add_argument("--vqrae", type=Path, default=REPO / "target" / "release" / "vqrae")
    k.add_argument("--reconstruct", type=int, default=8, help="images also compared through `vqrae reconstruct`")
    k.add_argument("--threads", type=int)
    k.add_argument("images", type=Path, nargs="+")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if getattr(a, "device", "cpu") == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA device")
    if a.cmd == "check":
        return check(a.dir, a.device)
    if a.cmd == "run":
        if a.iters == 0:  # as in the Rust bench: 0 sizes the run to --seconds
            a.iters = None
        if a.batch < 1 or (a.iters is not None and a.iters < 1) or not a.seconds > 0:
            ap.error("--batch and --seconds must be positive and --iters >= 0")
        if a.profile and a.device != "cuda":
            ap.error("--profile needs --device cuda")
        if a.row.startswith("train_") and a.dtype not in ("auto", "float32"):
            ap.error(f"--dtype {a.dtype}: the training rows run in float32 only")
        print(json.dumps(run_row(a.dir, a.row, a.batch, a.iters, a.prefill_logits, a.device, a.dtype,
                                a.seconds, a.profile)))
        return 0
    if a.cmd == "fixtures":
        return fixtures(a.out, a.arch, a.seed)
    return cli_check(a.model, a.images, a.vqrae, a.reconstruct)


if __name__ == "__main__":
    sys.exit(main())
