#!/usr/bin/env python3
"""Where a tokenizer's reconstruction error lies on the easy-VQA test images: background pixels
(each image's most frequent colour: easy-VQA draws one flat, randomly tinted background) against
the rest (the shape and its edges), and the mean PSNR the same reconstructions would have with
an exact background. Runs the tokenizer through the PyTorch reference (scripts/perf/reference.py,
which agrees with `vqrae eval-tokenizer`'s PSNR).

    scripts/tokenizer_error_split.py TOKENIZER_DIR [--json OUT]
"""
import json
import math
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
model = R.Vqrae.load(Path(sys.argv[1]))
data = Path(os.environ.get("VQRAE_DATA", str(REPO / ".data")))
files = sorted((data / "easy-vqa" / "test" / "images").glob("*.png"), key=lambda p: int(p.stem))
te = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
se_bg = se_fg = 0.0; n_bg = n_fg = 0; psnr = []; psnr_bgfix = []
with torch.no_grad():
    for i in range(0, len(te), 100):
        x = model.normalize_u8(te[i:i+100])
        _, codes = model.encode(x)
        rec = model.to_u8(model.decode(codes)).astype(np.float64)
        ref = te[i:i+100].astype(np.float64)
        for r, t in zip(rec, ref):
            # PSNR per image as vqrae eval-tokenizer: MSE over pixels and channels
            flat = t.reshape(-1, 3)
            vals, counts = np.unique(flat, axis=0, return_counts=True)
            bg = vals[counts.argmax()]
            mask = np.all(t == bg, axis=-1)
            err = ((r - t) ** 2).sum(-1)
            se_bg += err[mask].sum(); n_bg += mask.sum(); se_fg += err[~mask].sum(); n_fg += (~mask).sum()
            psnr.append(10 * math.log10(255**2 / max(err.mean() / 3, 1e-10)))
            fixed = r.copy(); fixed[mask] = t[mask]
            psnr_bgfix.append(10 * math.log10(255**2 / max(((fixed - t) ** 2).mean(), 1e-10)))
tot = n_bg + n_fg
out = dict(model=sys.argv[1], model_sha256=model_sha256(sys.argv[1]), psnr=float(np.mean(psnr)), psnr_background_exact=float(np.mean(psnr_bgfix)),
           background_pixel_share=n_bg / tot, error_share_background=se_bg / (se_bg + se_fg),
           mse_background=se_bg / n_bg / 3, mse_rest=se_fg / n_fg / 3)
print(json.dumps(out, indent=1))
if "--json" in sys.argv:
    Path(sys.argv[sys.argv.index("--json") + 1]).write_text(json.dumps(out, indent=1) + "\n")
