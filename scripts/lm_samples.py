#!/usr/bin/env python3
"""The README's sample figure: six captions' rows of an eval-t2i grid (24 captions x 8 seeds,
64 px cells, 2 px border and gaps), twice the size.

    scripts/lm_samples.py docs/results/lm/grid-cfg2.png docs/results/lm/samples-cfg2.png
"""
import sys
from PIL import Image
src, dst = sys.argv[1], sys.argv[2]
rows = [0, 4, 8, 9, 13, 23]
g = Image.open(src).convert("RGB")
out = Image.new("RGB", (g.width, 4 + 64 * len(rows) + 2 * (len(rows) - 1)), "white")
for k, r in enumerate(rows):
    out.paste(g.crop((0, 2 + 66 * r, g.width, 2 + 66 * r + 64)), (0, 2 + 66 * k))
out.resize((out.width * 2, out.height * 2), Image.NEAREST).save(dst)
