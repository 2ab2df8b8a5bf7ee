#!/usr/bin/env python3
"""Markdown tables of docs/RESULTS.md from the reports scripts/tokenizer-experiments.sh wrote.

Reads docs/results/tokenizer/<run>-eval.json (held-out figures), <run>-train.json (training
summary, wall seconds) and <run>-probe.json (linear probes); prints one table per experiment.
Standard library only.
"""

import json
import sys
from pathlib import Path

DIR = Path(__file__).resolve().parent.parent / "docs" / "results" / "tokenizer"


def load(name, kind):
    path = DIR / f"{name}-{kind}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def minutes(name):
    train = load(name, "train")
    return f"{train['seconds'] / 60:.1f}" if train else "-"


def eval_cells(name):
    ev = load(name, "eval")
    if ev is None:
        return None
    r = ev["report"]
    cos = r.get("feature_cosine")
    return {
        "psnr": f"{r['psnr']:.2f}",
        "ssim": f"{r['ssim']:.3f}",
        "util": f"{100 * r['utilisation']:.1f}%",
        "ppl": f"{r['perplexity']:.0f}",
        "cos": "-" if cos is None else f"{cos:.3f}",
        "within": f"{100 * r['feature_within_image_share']:.0f}%"
        if "feature_within_image_share" in r else "-",
        "k": r["codebook_size"],
        "images": r["images"],
    }


def probe_cells(name):
    rows = load(name, "probe")
    if not rows:
        return "-", "-"
    acc = {r["probe"]: f"{100 * r['accuracy']:.2f}%" for r in rows}
    return acc.get("shape", "-"), acc.get("colour", "-")


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def sweep_table(label, variants):
    """One row per (label value, run) that has an evaluation."""
    rows = []
    for value, name in variants:
        c = eval_cells(name)
        if c:
            rows.append([value, c["util"], c["ppl"], c["psnr"], c["ssim"], minutes(name)])
    return table([label, "utilisation", "perplexity", "PSNR dB", "SSIM", "train min"], rows)


def main():
    sections = []

    rows = []
    for name, what in [
        ("easyvqa-s1", "stage 1 (encoder frozen)"),
        ("easyvqa-s2", "stage 2, distillation (the previous shipped LM's tokenizer)"),
        ("easyvqa-s2-no-distill", "stage 2, no distillation"),
        ("easyvqa-s2-long", "stage 2 continued, lambda_d 0.01 to the original, 2,000 steps"),
        ("easyvqa-s2-longer", "the same, 1,000 more steps (default tokenizer)"),
        ("easyvqa-v1-s1", "first recipe: stage 1"),
        ("easyvqa-v1-s2", "first recipe: stage 2, distillation"),
        ("easyvqa-v1-s2-no-distill", "first recipe: stage 2, no distillation"),
        ("fashion-s1", "Fashion-MNIST, stage 1"),
        ("fashion-v1-s1", "Fashion-MNIST, first recipe: stage 1"),
    ]:
        c = eval_cells(name)
        if c:
            shape, colour = probe_cells(name)
            rows.append([what, c["images"], c["psnr"], c["ssim"], c["util"], c["ppl"], c["cos"],
                         c["within"], shape, colour, minutes(name)])
    sections.append(("Default tokenizers (held-out test split)", table(
        ["run", "test images", "PSNR dB", "SSIM", "utilisation", "perplexity",
         "feature cosine", "within-image share", "probe shape", "probe colour", "train min"],
        rows)))

    sections.append(("The default recipe's choices, 600 steps of stage 1 each", sweep_table(
        "stage 1 variant", [
            ("the recipe (restarts every 50, perceptual 0, quant 0.2)", "ablation-recipe"),
            ("without dead-code restarts", "ablation-no-restart"),
            ("with feature matching at 1.1 (the first recipe's)", "ablation-perceptual"),
            ("quantisation weight 1.0", "ablation-quant-1"),
            ("codebook 4,096 instead of 1,024", "ablation-size-4096"),
            ("encoder pretrained with a patch-colour head", "ablation-colour-encoder"),
        ])))

    sections.append(("Codebook dimension, k = 1024 (encoder width 128)", sweep_table(
        "dim e", [(dim, f"sweep-dim-{dim}") for dim in [16, 64, 128, 256, 512]])))

    sections.append(("Codebook size, e = 256", sweep_table("size k", [
        (256, "sweep-size-256"), (1024, "sweep-dim-256"), (4096, "sweep-size-4096")])))
    sections.append(("SimVQ vs plain VQ, e = 256, k = 1024", sweep_table("quantizer", [
        ("SimVQ", "sweep-dim-256"), ("plain VQ", "sweep-vq"),
        ("SimVQ, cosine lookup (not in the paper)", "sweep-cosine")])))

    rows = []
    for what, name, extra in [
        ("end to end, no distillation", "strategy-end-to-end", None),
        ("one stage + distillation", "strategy-one-stage", None),
        ("two stages + distillation", "strategy-two-stage", "strategy-stage1"),
    ]:
        c = eval_cells(name)
        if c:
            shape, colour = probe_cells(name)
            mins = minutes(name)
            if extra and mins != "-" and minutes(extra) != "-":
                mins = f"{float(mins) + float(minutes(extra)):.1f}"
            rows.append([what, c["psnr"], c["ssim"], c["util"], c["cos"], c["within"], shape,
                         colour, mins])
    sections.append(("Training strategy (150 steps each)", table(
        ["strategy", "PSNR dB", "SSIM", "utilisation", "feature cosine", "within-image share",
         "probe shape", "probe colour", "train min"], rows)))

    rows = []
    for e, k in [(32, 4096), (64, 4096), (128, 4096), (256, 4096), (384, 4096), (768, 4096),
                 (384, 1024), (384, 16384)]:
        name = f"table5-e{e}-k{k}"
        ev = load(name, "eval")
        if ev is None:
            continue
        r, per = ev["report"], ev.get("per_source", {})
        fd = lambda src: f"{per[src]['fd_dinov2']:.0f}" if "fd_dinov2" in per.get(src, {}) else "-"
        rows.append([e, k, f"{100 * r['utilisation']:.1f}%", f"{r['perplexity']:.0f}",
                     f"{r['psnr']:.2f}", f"{r['ssim']:.3f}", f"{r.get('fd_dinov2', float('nan')):.1f}",
                     fd("easy-vqa"), fd("scenes"), fd("emoji"), fd("tuxpaint"), minutes(name)])
    sections.append(("Table 5 on DINOv2-S (width 384), 400 steps of stage 1 each, four sources",
                     table(["dim e", "size k", "utilisation", "perplexity", "PSNR dB", "SSIM",
                            "FD-DINOv2 (all 662)", "FD easy-VQA", "FD scenes", "FD emoji",
                            "FD Tux Paint", "train min"], rows)))

    for title, body in sections:
        print(f"### {title}\n\n{body}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
