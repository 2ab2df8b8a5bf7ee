#!/usr/bin/env python3
"""A tokenizer's held-out easy-VQA figures under the other common metric conventions, computed by
scikit-image on reconstructions from the PyTorch reference (scripts/perf/reference.py):

- PSNR as the mean of per-image PSNR (what `vqrae eval-tokenizer` reports) and as the PSNR of
  the test set's pooled MSE (lower when some images are much worse than others);
- SSIM with Wang et al.'s Gaussian window (sigma 1.5; what `eval-tokenizer` reports) and with
  scikit-image's default uniform 7x7 window.

    scripts/tokenizer_metric_conventions.py TOKENIZER_DIR [--json OUT]
"""
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts" / "perf"))
import reference as R  # noqa: E402
from check_results import model_sha256  # noqa: E402  (this folder): the hash results record

torch.set_num_threads(int(os.environ.get("NT", "2")))
args = sys.argv[1:]
json_out = None
if "--json" in args:
    i = args.index("--json")
    json_out = Path(args[i + 1])
    del args[i:i + 2]
if len(args) != 1:
    sys.exit(__doc__)
model_dir = Path(args[0])
data = Path(os.environ.get("VQRAE_DATA", str(REPO / ".data"))) / "easy-vqa" / "test" / "images"
files = sorted(data.glob("*.png"), key=lambda p: int(p.stem))
test = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])

m = R.Vqrae.load(model_dir).eval()
psnr, ssim_gauss, ssim_uniform, sq_err = [], [], [], []
with torch.no_grad():
    for i in range(0, len(test), 100):
        ref = test[i:i + 100]
        z = m.proj_in(m.encoder(m.normalize_u8(ref)))
        z_q = m.quantizer(z)[0]
        rec = m.to_u8(m.decoder(z_q, m.cfg.grid))
        for a, b in zip(ref, rec):
            psnr.append(peak_signal_noise_ratio(a, b, data_range=255))
            ssim_gauss.append(structural_similarity(
                a, b, channel_axis=2, data_range=255, gaussian_weights=True, sigma=1.5,
                use_sample_covariance=False))
            ssim_uniform.append(structural_similarity(a, b, channel_axis=2, data_range=255))
            sq_err.append(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
out = {
    "model": str(model_dir),
    "model_sha256": model_sha256(model_dir),
    "images": len(test),
    "psnr_mean_per_image": float(np.mean(psnr)),
    "psnr_pooled_mse": float(10 * np.log10(255 ** 2 / np.mean(sq_err))),
    "ssim_gaussian_window": float(np.mean(ssim_gauss)),
    "ssim_uniform_7x7_window": float(np.mean(ssim_uniform)),
}
text = json.dumps(out, indent=1)
print(text)
if json_out:
    json_out.write_text(text + "\n")
