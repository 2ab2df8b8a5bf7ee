#!/usr/bin/env python3
"""The layout limits of vqrae-rs, checked on the tracked tree (the test command runs this).

- the binary (`src/`) stays thin: under 1,200 lines in all;
- no library source file has more than 700 lines outside its `#[cfg(test)]` module;
- no function (library, binary or test) is longer than 120 lines;
- no file refers to anything outside the repository (a parent folder's files).

Rust is read as text: a function runs from its `fn` line to the line where its braces balance,
with strings, chars and comments skipped. Prints every breach and exits 1 if there is one.
"""
import re
import subprocess
import sys
from pathlib import Path

BIN_LINES = 1200
FILE_LINES = 700
FN_LINES = 120
# a parent folder's files; spelled in pieces so this line does not match itself
SHARED = "shared"
OUTSIDE = re.compile(r"\.\./" + SHARED + "|" + SHARED + r"/(gpu\.md|scripts)")
FN = re.compile(r"^\s*(pub(\([a-z]+\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)")


def strip_code(line, state):
    """`line` with string/char literals and comments blanked; `state` carries block comments
    and multi-line strings across lines."""
    out, i = [], 0
    while i < len(line):
        if state["raw"]:
            j = line.find(state["raw"], i)
            if j < 0:
                return "".join(out)
            i, state["raw"] = j + len(state["raw"]), None
        elif state["block"]:
            j = line.find("*/", i)
            if j < 0:
                return "".join(out)
            state["block"], i = False, j + 2
        elif state["string"]:
            if line[i] == "\\":
                i += 2
            elif line[i] == '"':
                state["string"], i = False, i + 1
            else:
                i += 1
        elif line.startswith("//", i):
            break
        elif line.startswith("/*", i):
            state["block"], i = True, i + 2
        elif line[i] == '"':
            state["string"], i = True, i + 1
        elif line[i] == "'" and re.match(r"'(\\.|[^\\'])'", line[i:]):
            i += len(re.match(r"'(\\.|[^\\'])'", line[i:]).group(0))
        elif re.match(r'r(#*)"', line[i:]) and (i == 0 or not line[i - 1].isalnum()):
            hashes = re.match(r'r(#*)"', line[i:]).group(1)
            state["raw"], i = '"' + hashes, i + len(hashes) + 2
        else:
            out.append(line[i])
            i += 1
    return "".join(out)


def scan(path):
    """(non-test line count, [(fn name, first line, length)])."""
    lines = path.read_text(encoding="utf-8").splitlines()
    state = {"block": False, "string": False, "raw": None}
    code = [strip_code(l, state) for l in lines]
    fns, non_test, depth, test_depth = [], 0, 0, None
    open_fns = []  # (name, start line, depth before its body)
    pending_test = False
    for n, (raw, c) in enumerate(zip(lines, code), 1):
        if raw.strip().startswith("#[cfg(test)]"):
            pending_test = True
        m = FN.match(c)
        if m:
            open_fns.append((m.group(6), n, depth))
        if pending_test and re.match(r"^\s*mod\s+\w+\s*\{", c):
            test_depth, pending_test = depth, False
        if test_depth is None:
            non_test += 1
        depth += c.count("{") - c.count("}")
        while open_fns and depth <= open_fns[-1][2] and ("}" in c or c.rstrip().endswith(";")):
            name, start, _ = open_fns.pop()
            fns.append((name, start, n - start + 1))
        if test_depth is not None and depth <= test_depth:
            test_depth = None
    return non_test, fns


def main():
    root = Path(__file__).resolve().parent.parent
    # tracked and new (not ignored) files, as the working tree has them
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=root, capture_output=True, text=True, check=True).stdout.split()
    files = sorted({f for f in files if (root / f).is_file()})
    breaches = []
    rust = [f for f in files if f.endswith(".rs")]
    bin_lines = sum(len((root / f).read_text().splitlines()) for f in rust if f.startswith("src/"))
    if bin_lines > BIN_LINES:
        breaches.append(f"src/: {bin_lines} lines (limit {BIN_LINES})")
    for f in rust:
        non_test, fns = scan(root / f)
        library = "/src/" in f and not f.startswith("src/") and "/tests/" not in f
        if library and non_test > FILE_LINES:
            breaches.append(f"{f}: {non_test} lines outside tests (limit {FILE_LINES})")
        for name, start, length in fns:
            if length > FN_LINES:
                breaches.append(f"{f}:{start}: fn {name} is {length} lines (limit {FN_LINES})")
    for f in files:
        if f.endswith((".rs", ".sh", ".md", ".py", ".toml")):
            for n, line in enumerate((root / f).read_text(errors="replace").splitlines(), 1):
                if OUTSIDE.search(line):
                    breaches.append(f"{f}:{n}: refers outside the repository")
    for b in breaches:
        print(b)
    print(f"layout: {len(rust)} Rust files, src/ {bin_lines} lines, "
          f"{len(breaches)} breach(es)", file=sys.stderr)
    return 1 if breaches else 0


if __name__ == "__main__":
    sys.exit(main())
