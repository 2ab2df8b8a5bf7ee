#!/usr/bin/env python3
"""Checks that the results the docs cite can be trusted (the test command runs this).

1. Every result file that README.md or a docs/**/*.md page cites exists: paths with
   `docs/results/` or `results/` in them (globs and `{a,b}` lists must match at least one file,
   a folder must exist) and every relative Markdown link.
2. Every model a result file under docs/results/ records is still what it measured: wherever a
   JSON object (a .json file or a line of a .jsonl file) holds a path under key K and a hash
   under K_sha256, the model at that path is hashed again and must give the same sha256. A path
   of the form `commit:<sha> <path>` points into the repository's history (the model is no
   longer in the tree); it is hashed from git's objects when that commit is in the clone. A
   hashed path under models/ that is gone fails; one outside the repository (runs/, a
   temporary file) cannot be checked and is only counted.
   A models/ path recorded without a hash is listed; `--strict` makes that a failure too.

The model hash (the rule the writers of result files follow):
- a file: the sha256 of its bytes (what `sha256sum` and `vqrae_data::fs::sha256_file` give);
- a directory: the sha256 of the text made of one line `<file sha256>  <relative path>\\n`
  per file under it, recursively, sorted by relative path ('/' separators, byte order),
  leaving out `card.json` and `qualification.json` (records about the model written beside
  it, not part of what it computes) and names starting with '.'. In a shell:
    cd DIR && find . -type f ! -name card.json ! -name qualification.json ! -name '.*' \\
        -printf '%P\\n' | LC_ALL=C sort | xargs -d '\\n' sha256sum | sha256sum

Usage: check_results.py [--strict] [--root DIR] | --hash PATH... | --self-test
Runs its self-test first, then the checks; prints every failure and exits 1 if there is one.
Standard library only, no network; about a second.
"""
import argparse
import glob
import hashlib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HASH_SUFFIX = "_sha256"
HISTORY = "commit:"
# records about a model written beside it: they change without the model changing
NOT_MODEL = {"card.json", "qualification.json"}
MODEL_PATH = re.compile(r"models/[\w.+-]+(/[\w.+-]+)*")
CITED = re.compile(r"(?<![\w/.$-])((?:\.\./)*(?:docs/)?results/[\w./*{},+-]*[\w*}/])")
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)")


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def listing_sha256(files):
    """The directory rule over `files`: (relative path, file sha256) pairs."""
    keep = sorted((p, h) for p, h in files if not excluded(p))
    return sha256_bytes("".join(f"{h}  {p}\n" for p, h in keep).encode())


def excluded(rel):
    name = rel.rsplit("/", 1)[-1]
    return name in NOT_MODEL or name.startswith(".")


def model_sha256(path):
    """The model hash of a file or directory in the working tree."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    files = [p for p in path.rglob("*") if p.is_file()]
    return listing_sha256((p.relative_to(path).as_posix(), file_sha256(p)) for p in files)


def git(root, *args):
    out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=False)
    return out.stdout if out.returncode == 0 else None


def history_sha256(root, commit, path):
    """The model hash of `path` as committed in `commit`; None when that cannot be known here
    (no git, no .git, a shallow clone without the commit), or why not when the full history
    says the pointer is wrong."""
    try:
        shallow = git(root, "rev-parse", "--is-shallow-repository")
    except OSError:
        return None
    if shallow is None:
        return None
    if git(root, "cat-file", "-e", commit + "^{commit}") is None:
        return None if shallow.strip() != b"false" else f"commit {commit} is not in the history"
    listing = git(root, "ls-tree", "-r", "-z", commit, "--", path)
    files = []
    for entry in (listing or b"").split(b"\0"):
        if entry:
            meta, name = entry.decode().split("\t", 1)
            blob = git(root, "cat-file", "blob", meta.split()[2])
            if blob is None:
                return None
            files.append((name, sha256_bytes(blob)))
    if not files:
        return f"commit {commit} has no {path}"
    if len(files) == 1 and files[0][0] == path:
        return files[0][1]
    prefix = path.rstrip("/") + "/"
    return listing_sha256((n[len(prefix):], h) for n, h in files if n.startswith(prefix))


# ---- 1. cited result files ----------------------------------------------------------------


def expand_braces(pattern):
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    head, tail = pattern[: m.start()], pattern[m.end():]
    return [x for alt in m.group(1).split(",") for x in expand_braces(head + alt + tail)]


def resolves(bases, target):
    """Whether `target` (a path, glob or folder) names something under one of `bases`."""
    def found(base, pattern):
        full = str(base / pattern)
        if any(c in pattern for c in "*?["):
            return bool(glob.glob(full, recursive=True))
        return Path(full).exists()

    patterns = expand_braces(target)
    return any(all(found(base, p) for p in patterns) for base in bases)


def citations(text):
    """(line number, target, is a link) for every result path and relative link in `text`."""
    for n, line in enumerate(text.splitlines(), 1):
        seen = set()
        for m in CITED.finditer(line):
            seen.add(m.group(1).rstrip("."))
            yield n, m.group(1).rstrip("."), False
        for m in LINK.finditer(line):
            target = m.group(1).split("#", 1)[0].split("?", 1)[0]
            if target in seen or "://" in m.group(1) or target.startswith(("mailto:", "/")):
                continue
            if target:
                yield n, target, True


def check_citations(root):
    failures, count = [], 0
    pages = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    for page in pages:
        if not page.is_file():
            continue
        here = page.parent
        for n, target, link in citations(page.read_text(encoding="utf-8")):
            count += 1
            if link or target.startswith("../"):
                bases = [here]
            elif target.startswith("docs/"):
                bases = [root]
            else:  # results/...: the page's folder, or docs/ as a page at the root means it
                bases = [here, root / "docs"]
            if not resolves(bases, target):
                rel = page.relative_to(root).as_posix()
                failures.append(f"{rel}:{n}: cites {target}, which does not exist")
    return failures, count


# ---- 2. recorded models -------------------------------------------------------------------


def records(path):
    """(where, JSON value) for a .json file or each line of a .jsonl file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                yield f"line {n}", json.loads(line)
    else:
        yield "", json.loads(text)


def objects(value):
    if isinstance(value, dict):
        yield value
        for v in value.values():
            yield from objects(v)
    elif isinstance(value, list):
        for v in value:
            yield from objects(v)


def check_one(root, recorded, want, cache):
    """None if the model at `recorded` hashes to `want`, else why not (or 'unverifiable')."""
    if recorded.startswith(HISTORY):
        commit, _, path = recorded[len(HISTORY):].partition(" ")
        key = (commit, path)
        if key not in cache:
            cache[key] = history_sha256(root, commit, path.strip())
        got = cache[key]
        if got is None:
            return "unverifiable"
        if not re.fullmatch(r"[0-9a-f]{64}", got):
            return got  # why the pointer is wrong
        return None if got == want else f"hashes to {got} in that commit"
    target = root / recorded
    if not target.exists():
        if recorded.startswith("models/"):
            return "is gone (give the model's new path, or commit:<sha> <path> into history)"
        return "unverifiable"
    if recorded not in cache:
        cache[recorded] = model_sha256(target)
    got = cache[recorded]
    return None if got == want else f"now hashes to {got}: it holds another model"


def check_models(root):
    failures, unhashed, counts, cache = [], [], {"checked": 0, "unverifiable": 0}, {}
    results = root / "docs" / "results"
    files = sorted(p for p in results.rglob("*") if p.suffix in (".json", ".jsonl"))
    for path in files:
        rel = path.relative_to(root).as_posix()
        try:
            recs = list(records(path))
        except (ValueError, UnicodeDecodeError) as err:
            failures.append(f"{rel}: not JSON: {err}")
            continue
        for where, value in recs:
            at = f"{rel} ({where})" if where else rel
            for obj in objects(value):
                for key, val in obj.items():
                    if not isinstance(val, str) or key.endswith(HASH_SUFFIX):
                        continue
                    want = obj.get(key + HASH_SUFFIX)
                    if isinstance(want, str):
                        why = check_one(root, val, want, cache)
                        if why == "unverifiable":
                            counts["unverifiable"] += 1
                        elif why:
                            failures.append(f"{at}: {key} = {val} {why}, recorded {want}")
                        else:
                            counts["checked"] += 1
                    elif MODEL_PATH.fullmatch(val):
                        unhashed.append(f"{at}: {key} = {val} has no {key}{HASH_SUFFIX}")
    return failures, unhashed, counts


# ---- self-test ----------------------------------------------------------------------------


def self_test():
    """Builds a small tree with one of each failure and checks each is caught, and that the
    directory rule is the documented shell pipeline's."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = root / "models" / "m"
        model.mkdir(parents=True)
        (model / "config.json").write_text("{}")
        (model / "model.safetensors").write_bytes(b"weights")
        (model / "card.json").write_text("{}")
        lines = "".join(
            f"{sha256_bytes(b)}  {n}\n" for n, b in [("config.json", b"{}"),
                                                     ("model.safetensors", b"weights")])
        want = sha256_bytes(lines.encode())
        assert model_sha256(model) == want, "directory rule"
        res = root / "docs" / "results" / "x"
        res.mkdir(parents=True)
        (res / "ok.json").write_text(json.dumps({"model": "models/m", "model_sha256": want}))
        (root / "README.md").write_text(
            "see `docs/results/x/ok.json`, docs/results/x/{ok,gone}.json and [a](docs/nope.md)\n")
        fails, _ = check_citations(root)
        assert len(fails) == 2 and "gone" in fails[0] and "nope" in fails[1], fails
        fails, unhashed, counts = check_models(root)
        assert not fails and not unhashed and counts["checked"] == 1, (fails, unhashed)
        (model / "card.json").write_text('{"changed": true}')
        assert not check_models(root)[0], "a card is not the model"
        (model / "model.safetensors").write_bytes(b"other weights")
        fails = check_models(root)[0]
        assert len(fails) == 1 and "another model" in fails[0], fails
        (res / "ok.json").write_text(json.dumps({"model": "models/gone", "model_sha256": want,
                                                 "tokenizer": "models/m"}))
        fails, unhashed, _ = check_models(root)
        assert len(fails) == 1 and "is gone" in fails[0] and len(unhashed) == 1, (fails, unhashed)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--strict", action="store_true", help="a models/ path without a hash fails")
    ap.add_argument("--hash", nargs="+", metavar="PATH", help="print the model hash of PATHs")
    ap.add_argument("--self-test", action="store_true", help="only run the self-test")
    args = ap.parse_args()
    if args.hash:
        for p in args.hash:
            print(f"{model_sha256(p)}  {p}")
        return 0
    self_test()
    if args.self_test:
        print("check_results: self-test passed")
        return 0
    root = args.root.resolve()
    cited, n_cited = check_citations(root)
    models, unhashed, counts = check_models(root)
    failures = cited + models + (unhashed if args.strict else [])
    for line in failures:
        print(line)
    if unhashed and not args.strict:
        print(f"check_results: {len(unhashed)} models/ paths recorded without a hash:")
        for line in unhashed:
            print(f"  {line}")
    print(
        f"check_results: {n_cited} citations, {counts['checked']} recorded models checked by "
        f"hash, {counts['unverifiable']} not checkable here (outside the repository or its "
        f"history); {len(failures)} failures"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
