#!/usr/bin/env python3
"""Does a tokenizer carry easy-VQA's background tint? For each tokenizer, the background tokens
(8 px patches that are all background colour) of every image are averaged at three points (the
encoder's features, their projection, and the quantized codewords), and a ridge regression from
them to the image's background colour is fitted on 1,500 training images and scored on the 1,000
test images (R^2 and RMSE in 0-255 units; the tint's own standard deviation is ~7.4 per channel).
Runs through the PyTorch reference (scripts/perf/reference.py).

    scripts/tokenizer_tint_probe.py TOKENIZER_DIR... [--json OUT]
"""
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts" / "perf"))
import reference as R  # noqa: E402
from check_results import model_sha256  # noqa: E402  (this folder): the hash results record

torch.set_num_threads(int(os.environ.get("NT", "1")))
DATA = Path(os.environ.get("VQRAE_DATA", str(REPO / ".data"))) / "easy-vqa"
args = sys.argv[1:]
json_out = None
if "--json" in args:
    i = args.index("--json")
    json_out = Path(args[i + 1])
    args = args[:i] + args[i + 2:]


def load(split, n):
    files = sorted((DATA / split / "images").glob("*.png"), key=lambda p: int(p.stem))[:n]
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


def background(images):
    colours, masks = [], []
    for t in images:
        values, counts = np.unique(t.reshape(-1, 3), axis=0, return_counts=True)
        b = values[counts.argmax()]
        colours.append(b)
        masks.append(np.all(t == b, axis=-1))
    return np.array(colours, dtype=np.float64), np.array(masks)


def background_means(model, images, masks):
    """(B, d) mean of each image's background tokens at the three points."""
    patch = images.shape[1] // model.cfg.grid[0]
    g = model.cfg.grid[0]
    out = {"features": [], "projected": [], "quantized": []}
    with torch.no_grad():
        for i in range(0, len(images), 100):
            x = model.normalize_u8(images[i:i + 100])
            f = model.encoder(x)
            p = model.proj_in(f)
            _, codes, _ = model.quantizer(p)
            q = model.quantizer.lookup(codes)
            m = masks[i:i + 100].reshape(-1, g, patch, g, patch).all(axis=(2, 4)).reshape(-1, g * g)
            for k, t in (("features", f), ("projected", p), ("quantized", q)):
                t = t.numpy()
                out[k].append(np.stack([t[j][m[j]].mean(0) for j in range(len(t))]))
    return {k: np.concatenate(v) for k, v in out.items()}


train, test = load("train", 1500), load("test", 1000)
(y_tr, m_tr), (y_te, m_te) = background(train), background(test)
results = []
for directory in args:
    model = R.Vqrae.load(Path(directory))
    x_tr, x_te = background_means(model, train, m_tr), background_means(model, test, m_te)
    row = {"model": directory, "model_sha256": model_sha256(directory), "tint_std": y_te.std(0).round(2).tolist()}
    for k in x_tr:
        mu, ym = x_tr[k].mean(0), y_tr.mean(0)
        a = x_tr[k] - mu
        w = np.linalg.solve(a.T @ a + 1e-2 * np.eye(a.shape[1]), a.T @ (y_tr - ym))
        pred = (x_te[k] - mu) @ w + ym
        r2 = 1 - ((pred - y_te) ** 2).sum() / ((y_te - y_te.mean(0)) ** 2).sum()
        row[k] = {"r2": round(float(r2), 3), "rmse": round(float(np.sqrt(((pred - y_te) ** 2).mean())), 2)}
    print(json.dumps(row), flush=True)
    results.append(row)
if json_out:
    json_out.write_text(json.dumps(results, indent=1) + "\n")
