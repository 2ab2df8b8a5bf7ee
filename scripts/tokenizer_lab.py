#!/usr/bin/env python3
"""A PyTorch sandbox for tokenizer recipes: trains the project's tokenizer architecture (the
modules of scripts/perf/reference.py) on easy-VQA for a few hundred steps and reports held-out
PSNR, utilisation and perplexity. PyTorch trains these small models ~2x faster than candle on
this machine's CPU, so recipe questions (loss weights, dead-code restarts, encoder learning
rates) were asked here first; every choice that went into the Rust defaults was then measured
again with `vqrae train-tokenizer` + `vqrae eval-tokenizer` (docs/RESULTS.md).

    scripts/tokenizer_lab.py --init runs/easyvqa-s1/model --quant simvq --restart 50 --split 1 \
        --steps 600 --perc 0 --tag simvq-split

--init is any stage-1 tokenizer directory: its config and its (pretrained, frozen) encoder are
used, everything after the encoder starts fresh unless --keep names it. One JSON line per run
is appended to --out. NT sets the torch threads (2).
"""
import argparse
import copy
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts" / "perf"))
import reference as R  # noqa: E402
from check_results import model_sha256  # noqa: E402  (this folder): the hash results record

torch.set_num_threads(int(os.environ.get("NT", "2")))
ap = argparse.ArgumentParser()
ap.add_argument("--init", required=True, help="a stage-1 tokenizer directory")
ap.add_argument("--data", default=os.environ.get("VQRAE_DATA", str(REPO / ".data")))
ap.add_argument("--out", default="runs/tokenizer-lab.jsonl")
ap.add_argument("--quant", default="simvq", choices=["simvq", "vq", "none"], help="none: continuous")
ap.add_argument("--k", type=int, default=1024)
ap.add_argument("--dim", type=int, default=256)
ap.add_argument("--steps", type=int, default=300)
ap.add_argument("--lr", type=float, default=1.2e-3)
ap.add_argument("--enc_lr", type=float, default=0.0, help="> 0 trains the encoder (distilled)")
ap.add_argument("--distill", type=float, default=1.0)
ap.add_argument("--perc", type=float, default=1.1, help="feature matching on the frozen encoder")
ap.add_argument("--bs", type=int, default=32)
ap.add_argument("--restart", type=int, default=0, help="dead-code restart every N steps (0: off)")
ap.add_argument("--split", type=int, default=0, help="1: restart by splitting live entries "
                "(the Rust trainer's); 0: re-seed from batch tokens (SimVQ through pinv(W))")
ap.add_argument("--keep", default="", help="comma list of decoder,proj,quant kept from --init")
ap.add_argument("--dec_layers", type=int, default=4)
ap.add_argument("--dec_width", type=int, default=128)
ap.add_argument("--tag", default="run")
a = ap.parse_args()
torch.manual_seed(0)


def load(split, n=None):
    files = sorted(Path(a.data, "easy-vqa", split, "images").glob("*.png"), key=lambda p: int(p.stem))[:n]
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


tr, te = load("train"), load("test")
base = R.Vqrae.load(Path(a.init))
init_sha256 = model_sha256(a.init)  # what --init held when it was read
X = base.normalize_u8(tr); XT = base.normalize_u8(te)
cfg = base.cfg
cfg.quantizer = dict(cfg.quantizer, codebook_size=a.k, dim=a.dim, kind="simvq" if a.quant == "none" else a.quant)
cfg.decoder = dict(cfg.decoder, num_layers=a.dec_layers, hidden_size=a.dec_width)
m = R.Vqrae(cfg)
m.encoder.load_state_dict(base.encoder.state_dict())
keep = set(filter(None, a.keep.split(",")))
if "decoder" in keep: m.decoder.load_state_dict(base.decoder.state_dict())
if "proj" in keep: m.proj_in.load_state_dict(base.proj_in.state_dict())
if "quant" in keep: m.quantizer.load_state_dict(base.quantizer.state_dict())
teacher = copy.deepcopy(base.encoder).eval()
for p in teacher.parameters(): p.requires_grad_(False)

# data init
with torch.no_grad():
    idx = torch.randperm(len(X))[:64]
    z = m.proj_in(teacher(X[idx])).reshape(-1, a.dim)
    if "quant" not in keep:
        if a.quant == "simvq":
            mean = z.mean(0); g = torch.randn(z.shape[0], a.dim) / math.sqrt(z.shape[0])
            m.quantizer.codebook_proj.weight.copy_((z - mean).t() @ g); m.quantizer.codebook_proj.bias.copy_(mean)
        elif a.quant == "vq":
            m.quantizer.codebook.copy_(z[torch.randint(0, len(z), (a.k,))])

train_enc = a.enc_lr > 0
for p in m.encoder.parameters(): p.requires_grad_(train_enc)
if a.quant == "simvq": m.quantizer.codebook.requires_grad_(False)
dec_params = [p for n, p in m.named_parameters() if not n.startswith("encoder") and p.requires_grad]
groups = [{"params": dec_params, "lr": a.lr}]
if train_enc: groups.append({"params": list(m.encoder.parameters()), "lr": a.enc_lr})
opt = torch.optim.AdamW(groups, weight_decay=1e-4, betas=(0.9, 0.95))
peaks = [g["lr"] for g in opt.param_groups]
warm = min(100, a.steps // 10)

def fwd(x, train=True):
    f = m.encoder(x) if train_enc else teacher(x)
    z = m.proj_in(f)
    if a.quant == "none":
        return m.decoder(z, cfg.grid), torch.zeros(()), None, f
    zq, codes, ql = m.quantizer(z)
    return m.decoder(zq, cfg.grid), ql, codes, f

t0 = time.time(); use = torch.zeros(a.k)
for step in range(a.steps):
    s = step / max(1, a.steps)
    for g, pk in zip(opt.param_groups, peaks):
        g["lr"] = pk * (step + 1) / warm if step < warm else pk * 0.1 + 0.45 * pk * (1 + math.cos(math.pi * (step - warm) / (a.steps - warm)))
    x = X[torch.randint(0, len(X), (a.bs,))]
    with torch.no_grad(): tf = teacher(x)
    rec, ql, codes, f = fwd(x)
    l2 = (rec - x).pow(2).mean()
    loss = l2 + ql
    if a.perc > 0: loss = loss + a.perc * (teacher(rec) - tf).pow(2).mean()
    if train_enc and a.distill > 0: loss = loss + a.distill * (f - tf).pow(2).mean()
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step()
    if codes is not None:
        use += torch.bincount(codes.flatten(), minlength=a.k).float()
        if a.restart and (step + 1) % a.restart == 0:
            dead = (use == 0).nonzero().flatten()
            if len(dead):
                with torch.no_grad():
                    zz = m.proj_in(f.detach()).reshape(-1, a.dim)
                    tgt = zz[torch.randint(0, len(zz), (len(dead),))]
                    tgt = tgt + 0.01 * torch.randn_like(tgt) * zz.std()
                    if a.split:
                        # LBG split: a dead entry becomes a perturbed copy of an entry drawn by usage
                        src = torch.multinomial(use / use.sum(), len(dead), replacement=True)
                        C = m.quantizer.codebook
                        eps = torch.randn(len(dead), a.dim) * C.std()
                        disp = m.quantizer.codebook_proj(eps) - m.quantizer.codebook_proj.bias if a.quant == "simvq" else eps
                        err = (zz - m.quantizer(zz.unsqueeze(0))[0].squeeze(0)).pow(2).sum(-1).mean().sqrt()
                        scale = 0.5 * err / disp.norm(dim=-1, keepdim=True).clamp(min=1e-12)
                        C[dead] = C[src] + eps * scale
                    elif a.quant == "vq":
                        m.quantizer.codebook[dead] = tgt
                    else:
                        W = m.quantizer.codebook_proj.weight; b = m.quantizer.codebook_proj.bias
                        m.quantizer.codebook[dead] = (tgt - b) @ torch.linalg.pinv(W.t())
            use.zero_()
    if step % 50 == 0 or step == a.steps - 1:
        print(f"{step} loss {loss.item():.4f} l2 {l2.item():.4f} q {float(ql):.3f} used {int((torch.bincount(codes.flatten(), minlength=a.k)>0).sum()) if codes is not None else -1} {time.time()-t0:.0f}s", flush=True)

m.eval(); counts = torch.zeros(a.k); mse = []; cos = []
with torch.no_grad():
    for i in range(0, len(XT), 100):
        x = XT[i:i+100]
        rec, _, codes, f = fwd(x, train=train_enc)
        u8 = m.to_u8(rec).astype(np.float64); ref = te[i:i+100].astype(np.float64)
        mse += list(((u8 - ref) ** 2).mean(axis=(1, 2, 3)))
        if codes is not None: counts += torch.bincount(codes.flatten(), minlength=a.k).float()
        cos.append(F.cosine_similarity(f, teacher(x), dim=-1).mean().item())
psnr = float(np.mean([10 * math.log10(255 ** 2 / max(v, 1e-10)) for v in mse]))
p = counts / counts.sum().clamp(min=1)
args = {}
for key, value in vars(a).items():
    args[key] = value
    if key == "init":  # the hash beside the path it identifies (check_results.py's convention)
        args["init_sha256"] = init_sha256
res = dict(tag=a.tag, args=args, psnr=psnr, util=float((counts > 0).float().mean()), ppl=float(torch.exp(-(p[p>0]*p[p>0].log()).sum())), cos=float(np.mean(cos)), sec=time.time()-t0)
print(json.dumps(res)); open(a.out, "a").write(json.dumps(res) + "\n")
