"""Reference PSNR / SSIM from scikit-image for the Rust metrics test.

Writes tokenizer/tests/fixtures/metrics/{ref.png, distorted_*.png, expected.json}: a real
easy-VQA image and deterministic distortions (noise, blur, shift), with scikit-image's
`peak_signal_noise_ratio(data_range=255)` and `structural_similarity(channel_axis=2,
data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`.

    python3 -m venv ~/.venvs/ref && ~/.venvs/ref/bin/pip install scikit-image pillow numpy
    ~/.venvs/ref/bin/python scripts/make_metric_fixtures.py [--image .data/easy-vqa/test/images/0.png]
"""
import argparse
import json
from pathlib import Path

import numpy as np
import skimage
from PIL import Image, ImageFilter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

p = argparse.ArgumentParser()
p.add_argument("--image", default=".data/easy-vqa/test/images/0.png")
p.add_argument("--out", default="tokenizer/tests/fixtures/metrics")
a = p.parse_args()
out = Path(a.out)
out.mkdir(parents=True, exist_ok=True)
ref = Image.open(a.image).convert("RGB")
rng = np.random.default_rng(0)
ref_np = np.asarray(ref)
distorted = {
    "noise": np.clip(ref_np.astype(np.int16) + rng.integers(-40, 41, ref_np.shape), 0, 255).astype(np.uint8),
    "blur": np.asarray(ref.filter(ImageFilter.GaussianBlur(2))),
    "shift": np.roll(ref_np, 3, axis=1),
}
ref.save(out / "ref.png")
expected = {"skimage": skimage.__version__, "cases": {}}
for name, img in distorted.items():
    Image.fromarray(img).save(out / f"distorted_{name}.png")
    expected["cases"][name] = {
        "psnr": float(peak_signal_noise_ratio(ref_np, img, data_range=255)),
        "ssim": float(structural_similarity(ref_np, img, channel_axis=2, data_range=255,
                                            gaussian_weights=True, sigma=1.5,
                                            use_sample_covariance=False)),
    }
(out / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
print(json.dumps(expected, indent=2))
