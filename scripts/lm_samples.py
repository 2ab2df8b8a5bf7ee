#!/usr/bin/env python3
"""The README's sample figure: six captions' rows of an eval-t2i grid (one row per caption of
the test split, 8 seeds per row, 2 px border and gaps), twice the size.

    scripts/lm_samples.py docs/results/lm/grid-cfg2.png docs/results/lm/samples-cfg2.png
    scripts/lm_samples.py --first 8 scenes-grid-cfg2.png docs/results/lm/samples-scenes-cfg2.png

With --first K, the grid's first K rows instead (the scenes' figure: the first held-out scenes).
"""
import sys
from PIL import Image
args = sys.argv[1:]
if args[0] == "--first":
    rows = list(range(int(args[1])))
    args = args[2:]
else:
    # a red circle, a green rectangle, a blue triangle, a yellow circle, a teal rectangle, a
    # black triangle, in the grid's caption order
    rows = [0, 4, 8, 9, 13, 23]
src, dst = args
g = Image.open(src).convert("RGB")
cell = (g.width - 2) // 8 - 2
pitch = cell + 2
out = Image.new("RGB", (g.width, 2 + pitch * len(rows)), "white")
for k, r in enumerate(rows):
    out.paste(g.crop((0, 2 + pitch * r, g.width, 2 + pitch * r + cell)), (0, 2 + pitch * k))
out.resize((out.width * 2, out.height * 2), Image.NEAREST).save(dst)
