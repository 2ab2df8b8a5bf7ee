#!/usr/bin/env python3
"""The reference reading of SmolLM2-135M-Instruct (the Q4_1 GGUF that scripts/setup-smollm2.sh installs), for the
parity tests of vqrae-lm's dequantized f32 path.

transformers reads the same GGUF file and dequantizes every tensor to float32
(``AutoModelForCausalLM.from_pretrained(dir, gguf_file=name, torch_dtype=torch.float32)``); its tokenizer comes from
the GGUF metadata too. Two things are set explicitly, because transformers 4.46.3 gets them wrong or leaves them to
chance for this file:

* ``tie_word_embeddings=True``: the GGUF has no ``output.weight`` (tied embeddings), but transformers' GGUF config
  says untied and would leave ``lm_head.weight`` randomly initialised;
* ``attn_implementation="eager"``: the plain softmax(QK^T/sqrt(d))V, the textbook reference.

The model runs in float32, ``eval()``, under ``torch.no_grad()``, on the CPU.

Writes into ``lm/tests/fixtures/smollm2/`` (or ``--out``):

``reference.json`` (UTF-8), top-level keys:

* ``format``: ``"vqrae-smollm2-reference/1"``
* ``gguf``: ``{"file": "SmolLM2-135M-Instruct.Q4_1.gguf", "size": 98362432, "sha256": "b179c9..."}``
* ``versions``: ``{"python", "torch", "transformers", "tokenizers", "gguf", "numpy", "accelerate"}`` (strings)
* ``command``: the command line that wrote the files (string)
* ``model``: ``{"dtype": "float32", "attn_implementation": "eager", "tie_word_embeddings": true,
  "rms_norm_eps": float (as transformers read it from the GGUF's f32), "rope_theta": float, "vocab_size": 49152,
  "torch_threads": int}``
* ``generation``: ``{"do_sample": false, "max_new_tokens": 24, "eos_token_id": 2, "pad_token_id": 2}``
* ``prompts``: a list of 5 objects, in the order of the safetensors keys, each:

  - ``name`` (string), ``kind``: ``"chat"`` or ``"text"``
  - ``messages``: for ``chat`` the list of ``{"role", "content"}`` given to the GGUF's chat template with
    ``apply_chat_template(messages, tokenize=False, add_generation_prompt=True)`` (the template adds its default
    system prompt); ``null`` for ``text``
  - ``text``: the prompt string the model reads (for ``chat``: the rendered template)
  - ``input_ids``: list of int, ``tokenizer(text, add_special_tokens=False)``, so ``<|im_start|>`` (1) and
    ``<|im_end|>`` (2) in the rendered text parse as special tokens and nothing (no BOS) is prepended
  - ``top20``: ``{"ids": [int x 20], "logits": [float x 20]}``, the 20 largest logits at the last position,
    largest first (``torch.topk``, sorted)
  - ``last_logits_key``: ``"last_logits_<i>"``, the safetensors tensor with all 49,152 last-position logits
  - ``next_token_logprobs``: list of ``len(input_ids) - 1`` floats; entry ``j`` is
    ``log_softmax(logits[j])[input_ids[j + 1]]`` (the prompt scored by itself, for a perplexity cross-check)
  - ``greedy``: ``{"new_ids": [int], "text": str, "text_raw": str, "stopped_at_eos": bool, "margins": [float]}``:
    ``generate(do_sample=False, max_new_tokens=24)`` from ``input_ids``. ``new_ids`` are the generated ids only
    (at most 24; generation stops after emitting eos 2, which is then the last id). ``text`` is
    ``decode(new_ids, skip_special_tokens=True)``, ``text_raw`` with the special tokens kept. ``margins[k]`` is
    the top-1 minus top-2 logit at generation step ``k``: a small margin is where a tolerance-sized difference
    could flip the greedy choice.

* ``heldout``: ``{"file": "heldout.txt", "sha256": str, "chars": int, "input_ids": [int], "n_tokens": int,
  "chunk_tokens": 512, "n_chunks": int, "n_predicted": int, "nll_sum": float, "mean_nll": float,
  "perplexity": float, "logprobs_key": "heldout_next_logprobs", "chunking": str}``. The text is the whole file
  (UTF-8, read without newline translation, final newline included), tokenized as one sequence without special
  tokens; the ids are cut into consecutive, non-overlapping chunks of at most 512 tokens, each run as its own
  sequence from position 0 with no carried context and no BOS; in each chunk every token after the first is
  predicted. ``mean_nll`` = ``nll_sum / n_predicted`` (natural log), ``perplexity`` = ``exp(mean_nll)``.

``reference.safetensors``: ``last_logits_<i>`` float32, shape (49152,), for prompt ``i`` = 0..4 (the full
last-position logits); ``heldout_next_logprobs`` float32, shape (n_predicted,), the per-token log-probabilities of
heldout.txt in order (chunk by chunk, each chunk's tokens 1..len-1).

``heldout.txt`` is committed, never rewritten by this script: ~3,000 characters of this repository's own prose
(docs/TRAINING.md, docs/ARCHITECTURE.md, docs/LM.md, written in 2026), which the 2024 model cannot have seen.

The script fails unless the France prompt's greedy answer is "The capital of France is Paris." and every prompt's
ids decode back to its text.

Run (needs the venv of scripts/reference-venv.sh; neither the build nor the tests need it, the files are
committed)::

    scripts/setup-smollm2.sh && scripts/reference-venv.sh
    .data/venv-reference/bin/python scripts/smollm2_reference.py [--gguf FILE] [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SIZE = 98_362_432
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
FRANCE_ANSWER = "The capital of France is Paris."
MAX_NEW_TOKENS = 24
TOP_K = 20
CHUNK_TOKENS = 512

PROMPTS = [
    {"name": "france", "kind": "chat", "user": "What is the capital of France?"},
    {"name": "colors", "kind": "chat", "user": "Name three colors."},
    {"name": "sea", "kind": "chat", "user": "Write one sentence about the sea."},
    {
        "name": "paragraph",
        "kind": "text",
        "text": (
            "The old lighthouse stood at the end of the harbour wall, its white paint flaking in the salt wind. "
            "Every evening the keeper climbed the one hundred and twelve steps to light the lamp, and every "
            "morning he wrote the weather in a small blue notebook. One winter night, a storm"
        ),
    },
    {
        "name": "unicode",
        "kind": "text",
        "text": (
            "Café, naïve, façade, Größe, Zürich, São Paulo, Kraków — “quoted” ‘words’… "
            "Ελληνικά, русский язык, 日本語の文章、中文句子，한국어 문장; emoji 🙂🚀 and ½ ≤ π ≠ ∞. "
            "In English, the first word above means"
        ),
    },
]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse_args() -> argparse.Namespace:
    data = Path(os.environ.get("VQRAE_DATA", REPO / ".data"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gguf", type=Path, default=data / "models" / "smollm2" / GGUF_NAME)
    p.add_argument("--out", type=Path, default=REPO / "lm" / "tests" / "fixtures" / "smollm2")
    return p.parse_args()


def load(gguf: Path):
    """The tokenizer and the dequantized float32 model, both read from the GGUF by transformers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        torch_dtype=torch.float32,
        tie_word_embeddings=True,
        attn_implementation="eager",
    )
    model.eval()
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    if head.data_ptr() != emb.data_ptr():
        sys.exit("lm_head is not tied to embed_tokens: the logits would come from a random head")
    return tok, model


def prompt_record(i: int, spec: dict, tok, model) -> tuple[dict, "object"]:
    """Everything the fixture holds for one prompt, and its full last-position logits."""
    import torch

    messages = None
    if spec["kind"] == "chat":
        messages = [{"role": "user", "content": spec["user"]}]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = spec["text"]
    ids = tok(text, add_special_tokens=False).input_ids
    if tok.decode(ids, skip_special_tokens=False) != text:
        sys.exit(f"prompt {spec['name']}: its ids do not decode back to its text")
    x = torch.tensor([ids], dtype=torch.long)
    logits = model(x).logits[0].float()  # (T, V)
    last = logits[-1].contiguous()
    top = torch.topk(last, TOP_K, sorted=True)
    logp = torch.log_softmax(logits[:-1], dim=-1)
    next_lp = logp.gather(1, x[0, 1:].unsqueeze(1)).squeeze(1)

    out = model.generate(
        x,
        attention_mask=torch.ones_like(x),
        do_sample=False,
        max_new_tokens=MAX_NEW_TOKENS,
        eos_token_id=2,
        pad_token_id=2,
        output_scores=True,
        return_dict_in_generate=True,
    )
    new_ids = out.sequences[0, len(ids):].tolist()
    margins = []
    for s in out.scores:
        v = torch.topk(s[0].float(), 2).values
        margins.append(float(v[0] - v[1]))
    record = {
        "name": spec["name"],
        "kind": spec["kind"],
        "messages": messages,
        "text": text,
        "input_ids": ids,
        "top20": {"ids": top.indices.tolist(), "logits": [float(v) for v in top.values]},
        "last_logits_key": f"last_logits_{i}",
        "next_token_logprobs": [float(v) for v in next_lp],
        "greedy": {
            "new_ids": new_ids,
            "text": tok.decode(new_ids, skip_special_tokens=True),
            "text_raw": tok.decode(new_ids, skip_special_tokens=False),
            "stopped_at_eos": bool(new_ids and new_ids[-1] == 2),
            "margins": margins,
        },
    }
    return record, last


def heldout_record(path: Path, tok, model) -> tuple[dict, "object"]:
    """Perplexity of heldout.txt in 512-token chunks, and its per-token log-probabilities."""
    import torch

    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    ids = tok(text, add_special_tokens=False).input_ids
    pieces = []
    for start in range(0, len(ids), CHUNK_TOKENS):
        chunk = torch.tensor([ids[start : start + CHUNK_TOKENS]], dtype=torch.long)
        if chunk.shape[1] < 2:
            continue
        logp = torch.log_softmax(model(chunk).logits[0, :-1].float(), dim=-1)
        pieces.append(logp.gather(1, chunk[0, 1:].unsqueeze(1)).squeeze(1))
    lp = torch.cat(pieces)
    nll_sum = float(-lp.double().sum())
    mean = nll_sum / lp.numel()
    record = {
        "file": path.name,
        "sha256": sha256_file(path),
        "chars": len(text),
        "input_ids": ids,
        "n_tokens": len(ids),
        "chunk_tokens": CHUNK_TOKENS,
        "n_chunks": len(pieces),
        "n_predicted": int(lp.numel()),
        "nll_sum": nll_sum,
        "mean_nll": mean,
        "perplexity": math.exp(mean),
        "logprobs_key": "heldout_next_logprobs",
        "chunking": (
            "whole file, one sequence, no special tokens; consecutive non-overlapping chunks of at most 512 "
            "tokens, each from position 0 with no carried context; every token after a chunk's first is "
            "predicted; mean_nll = nll_sum / n_predicted (natural log), perplexity = exp(mean_nll)"
        ),
    }
    return record, lp.float().contiguous()


def to_json(value, depth: int = 0) -> str:
    """JSON with one key per line but every list of scalars on one line: diffable, and not 10,000 lines long."""
    pad, inner = " " * depth, " " * (depth + 1)
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k)}: {to_json(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}" if items else "{}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return "[\n" + ",\n".join(inner + to_json(v, depth + 1) for v in value) + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=False)


def versions() -> dict:
    from importlib.metadata import version

    names = ["torch", "transformers", "tokenizers", "gguf", "numpy", "accelerate"]
    return {"python": platform.python_version(), **{n: version(n) for n in names}}


def main() -> None:
    args = parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF loader's progress bar (plain tqdm)
    import torch
    import transformers
    from safetensors.torch import save_file

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    t0 = time.time()
    gguf = args.gguf
    if not gguf.is_file():
        sys.exit(f"{gguf} not found: run scripts/setup-smollm2.sh")
    digest = sha256_file(gguf)
    if digest != GGUF_SHA256 or gguf.stat().st_size != GGUF_SIZE:
        sys.exit(f"{gguf}: sha256 {digest}, expected {GGUF_SHA256}: run scripts/setup-smollm2.sh")
    heldout = args.out / "heldout.txt"
    if not heldout.is_file():
        sys.exit(f"{heldout} not found: it is committed with the fixtures")
    tok, model = load(gguf)
    t_load = time.time() - t0

    tensors = {}
    prompts = []
    with torch.no_grad():
        for i, spec in enumerate(PROMPTS):
            record, last = prompt_record(i, spec, tok, model)
            prompts.append(record)
            tensors[record["last_logits_key"]] = last
            print(f"{spec['name']}: {len(record['input_ids'])} ids -> {record['greedy']['text']!r}", file=sys.stderr)
        held, held_lp = heldout_record(heldout, tok, model)
    tensors["heldout_next_logprobs"] = held_lp
    france = prompts[0]["greedy"]["text"]
    if france != FRANCE_ANSWER:
        sys.exit(f"the France prompt answers {france!r}, expected {FRANCE_ANSWER!r}")

    argv0 = os.path.relpath(Path(sys.argv[0]).resolve(), Path.cwd())
    cfg = model.config
    doc = {
        "format": "vqrae-smollm2-reference/1",
        "gguf": {"file": gguf.name, "size": GGUF_SIZE, "sha256": digest},
        "versions": versions(),
        "command": "python " + shlex.join([argv0, *sys.argv[1:]]),
        "model": {
            "dtype": "float32",
            "attn_implementation": "eager",
            "tie_word_embeddings": True,
            "rms_norm_eps": float(cfg.rms_norm_eps),
            "rope_theta": float(cfg.rope_theta),
            "vocab_size": int(cfg.vocab_size),
            "torch_threads": torch.get_num_threads(),
        },
        "generation": {"do_sample": False, "max_new_tokens": MAX_NEW_TOKENS, "eos_token_id": 2, "pad_token_id": 2},
        "prompts": prompts,
        "heldout": held,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "reference.json", "w", encoding="utf-8") as f:
        f.write(to_json(doc) + "\n")
    save_file(tensors, str(args.out / "reference.safetensors"), metadata={"format": doc["format"], "gguf_sha256": digest})
    print(
        f"heldout.txt: {held['n_tokens']} tokens in {held['n_chunks']} chunk(s), mean NLL {held['mean_nll']:.4f}, "
        f"perplexity {held['perplexity']:.3f}",
        file=sys.stderr,
    )
    print(f"wrote {args.out}/reference.json and reference.safetensors (load {t_load:.1f} s, total "
          f"{time.time() - t0:.1f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
