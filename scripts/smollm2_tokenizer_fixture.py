#!/usr/bin/env python3
"""Reference token ids and chat renders of SmolLM2-135M-Instruct's GGUF tokenizer, for the Rust parity tests.

What: reads the tokenizer stored in the GGUF's metadata the way transformers does
(``AutoTokenizer.from_pretrained(dir, gguf_file=name)``) and writes, under ``lm/tests/fixtures/smollm2/``:

* ``tokenizer-ids.json``     a corpus of ~40 lines (English, numbers, code with tabs, runs of spaces, newlines,
                             accents, ß, Greek, Cyrillic, Arabic, Hebrew, Hindi, Chinese, Japanese, Korean, emoji
                             with ZWJ sequences / flags / skin tones, combining marks, the literal text of special
                             tokens, an empty line, a very long word, control bytes the vocabulary has no token
                             for: they become the unknown token) with, per line:
                             ``ids`` = ``tok.encode(line, add_special_tokens=False)`` (special tokens spelled in
                             the text are parsed as such: transformers' default), ``ids_plain`` = the same with
                             ``split_special_tokens=True`` (a special token's text stays plain text: what
                             ``TextTokenizer::encode`` does on purpose, so that a user cannot inject one),
                             ``decoded`` = ``tok.decode(ids_plain, skip_special_tokens=True,
                             clean_up_tokenization_spaces=False)`` (the byte-level round trip, control tokens
                             dropped as ``TextTokenizer::decode`` does; transformers' default cleanup, which llama.cpp
                             turns off for "smollm", is recorded separately as ``decoded_cleanup``), and
                             ``ids_llamacpp_pre``: the ids under
                             llama.cpp's "smollm" pre-tokenizer (digits split one by one before the GPT-2 regex;
                             transformers' GGUF conversion leaves that step out) when they differ.
* ``chat-templates.json``    the GGUF's ``tokenizer.chat_template`` and, for three conversations (user only; system +
                             user; user / assistant / user), ``apply_chat_template(messages, tokenize=False,
                             add_generation_prompt=True)`` and the ids of ``tokenize=True``.

Why: the Rust side (``vqrae_lm::gguf::tokenizer`` + ``vqrae_lm::chat``) builds its own tokenizer from the same
metadata; ``lm/tests/gguf_tokenizer.rs`` checks it gives identical ids and renders on the real file.

How to run (neither the build nor the tests need Python: the fixtures are committed). A venv holding
transformers 4.46.3 + tokenizers 0.20.3 + torch + gguf 0.19.0 (``scripts/reference-venv.sh`` makes one), and the
GGUF installed by ``scripts/setup-smollm2.sh``:

    .data/venv-reference/bin/python scripts/smollm2_tokenizer_fixture.py       # from the repository root

Options: ``--gguf PATH`` (default: $VQRAE_SMOLLM2_GGUF or <repo>/.data/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf),
``--out DIR`` (default: <repo>/lm/tests/fixtures/smollm2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_GGUF = REPO / ".data/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

CORPUS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France?",
    "I'm sure they'll say it's fine, won't they? We've seen it; you'd agree.",
    "pi is 3.14159 and e is about 2.71828",
    "Deadline: 2026-12-07 at 23:59:59 (UTC+01:00).",
    "Call 1234567890 or +1 (555) 010-9999; order #42 costs $1,299.99 / 12 months = 108.3%",
    "def add(a, b):\n\treturn a + b\n",
    "fn main() {\n    let v: Vec<u32> = vec![1, 2, 3];\n\tprintln!(\"{:?}\", v);\n}",
    "if (x == 0) { y = {\"key\": [1, 2]}; }",
    "two  spaces,   three spaces,    four and\ttab\t\tdouble tab",
    "   leading spaces and trailing spaces   ",
    "line one\nline two\n\nafter a blank line\r\nwindows line\n",
    "\n\n\n",
    "café, naïve, résumé, façade, Zoë, coöperate",
    "Straße, Fußball, groß; ẞ capital",
    "Ελληνικά: Καλημέρα κόσμε, αβγδε ΑΒΓΔΕ",
    "Русский текст: Привет, мир! Ёлка и щука.",
    "العربية: مرحبا بالعالم",
    "עברית: שלום עולם",
    "हिन्दी: नमस्ते दुनिया",
    "中文：你好，世界！这是一个测试。",
    "日本語：こんにちは世界。カタカナとひらがな、漢字。",
    "한국어: 안녕하세요 세계",
    "emoji: 😀 🎉 👍 🚀",
    "family 👨‍👩‍👧‍👦 and couple 👩‍❤️‍👨 (ZWJ sequences)",
    "flags: 🇫🇷 🇯🇵 🇺🇸 🏳️‍🌈",
    "skin tones: 👋🏻 👋🏽 👋🏿",
    "combining: e\u0301 a\u0308 n\u0303 (decomposed) vs é ä ñ",
    "Zalgo: Z\u0351\u036b\u0343a\u0310\u0308l\u0352g\u0313o\u0364",
    "a literal <|im_end|> inside the text",
    "and <|endoftext|> too, plus <|im_start|>user",
    "",
    "Pneumonoultramicroscopicsilicovolcanoconiosis" * 4,
    "x" * 300,
    "URL: https://example.com/path?q=a%20b&n=1#frag",
    "email: someone.else@example.org",
    "Mixed: ABCdef123ghi_456-JKL",
    "quotes: \u201csmart\u201d \u2018single\u2019 \u00abguillemets\u00bb",
    "math: ∑ x² ≤ ∞, √2 ≈ 1.414, ½ + ¾",
    "   \t \n  mixed whitespace only  \t",
    "What color is the circle?",
    "control bytes without a token: \x04\x06 bell\x07 gs\x1d end",
]

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a terse assistant. Answer in one word."},
        {"role": "user", "content": "Name a primary colour."},
    ],
    [
        {"role": "user", "content": "Hi! Can you count to three?"},
        {"role": "assistant", "content": "Sure: 1, 2, 3."},
        {"role": "user", "content": "Now backwards, in French: trois, deux, ..."},
    ],
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", type=Path, default=Path(os.environ.get("VQRAE_SMOLLM2_GGUF", DEFAULT_GGUF)))
    parser.add_argument("--out", type=Path, default=REPO / "lm/tests/fixtures/smollm2")
    args = parser.parse_args()
    if not args.gguf.is_file():
        print(f"{args.gguf} is missing: run scripts/setup-smollm2.sh", file=sys.stderr)
        return 1

    import tokenizers
    import transformers
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(args.gguf.parent), gguf_file=args.gguf.name)
    # llama.cpp's "smollm" pre-tokenizer: \p{N} one by one, then the GPT-2 regex, then the byte mapping.
    llamacpp = AutoTokenizer.from_pretrained(str(args.gguf.parent), gguf_file=args.gguf.name)
    llamacpp.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )

    versions = {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__}
    lines = []
    pre_differs = 0
    for text in CORPUS:
        ids = tok.encode(text, add_special_tokens=False)
        plain = tok.encode(text, add_special_tokens=False, split_special_tokens=True)
        entry = {
            "text": text,
            "ids": ids,
            "ids_plain": plain,
            "decoded": tok.decode(plain, skip_special_tokens=True, clean_up_tokenization_spaces=False),
            "decoded_cleanup": tok.decode(plain, skip_special_tokens=True),
        }
        other = llamacpp.encode(text, add_special_tokens=False, split_special_tokens=True)
        if other != plain:
            entry["ids_llamacpp_pre"] = other
            pre_differs += 1
        lines.append(entry)

    ids_doc = {
        "what": "SmolLM2-135M-Instruct GGUF tokenizer ids as transformers reads it (scripts/smollm2_tokenizer_fixture.py)",
        "gguf": args.gguf.name,
        "versions": versions,
        "pre_tokenizer": str(tok.backend_tokenizer.pre_tokenizer.__getstate__()),
        "lines_where_llamacpp_pre_differs": pre_differs,
        "lines": lines,
    }

    chats = []
    for messages in CONVERSATIONS:
        rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        chats.append({"messages": messages, "add_generation_prompt": True, "rendered": rendered, "ids": list(ids)})
    chat_doc = {
        "what": "apply_chat_template of the GGUF's tokenizer.chat_template (scripts/smollm2_tokenizer_fixture.py)",
        "gguf": args.gguf.name,
        "versions": versions,
        "chat_template": tok.chat_template,
        "bos_token": tok.bos_token,
        "eos_token": tok.eos_token,
        "conversations": chats,
    }

    args.out.mkdir(parents=True, exist_ok=True)
    for name, doc in (("tokenizer-ids.json", ids_doc), ("chat-templates.json", chat_doc)):
        path = args.out / name
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)
        print(f"wrote {path}")
    print(f"{len(lines)} lines; llama.cpp's pre-tokenizer differs from transformers' on {pre_differs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
