"""Which keyface package imports which (imports inside functions included), from the sources.

    python scripts/package_graph.py            # this checkout's src/
    python scripts/package_graph.py --src /path/to/other/src --sizes

A *package* is a subpackage of keyface (``codec``, ``render``...) or a top-level module
(``pipeline``, ``renderers``...). An edge is reported as upward when the importing package
sits below the imported one in ``LAYERS`` (the data flow, STYLE.md): those are the imports
that run back up a layer.
"""

from __future__ import annotations

import argparse
import ast
from collections import defaultdict
from pathlib import Path

LAYERS = [
    {"types", "threads", "registry", "facemesh", "ffmpeg", "imageops", "clips"},
    {"io", "bitstream"},
    {"face", "intra"},
    {"auxstream"},
    {"motion"},
    {"entropy"},
    {"render"},
    {"generator"},
    {"renderers", "fusion"},
    {"codec"},
    {"compose", "pipeline"},
    {"eval", "train", "server", "fuzzing"},
    {"cli"},
]


def layer(package: str) -> int:
    for i, group in enumerate(LAYERS):
        if package in group:
            return i
    return len(LAYERS)


def package_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "keyface" or len(parts) < 2:
        return None
    return parts[1]


def graph(src: Path) -> dict[tuple[str, str], set[str]]:
    root = src / "keyface"
    edges: dict[tuple[str, str], set[str]] = defaultdict(set)
    for path in sorted(root.rglob("*.py")):
        module = ".".join(path.relative_to(src).with_suffix("").parts).removesuffix(".__init__")
        here = package_of(module) or "__init__"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module]
            for t in targets:
                there = package_of(t)
                if there and there != here and here != "__init__":
                    edges[(here, there)].add(module)
    return edges


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src")
    parser.add_argument("--sizes", action="store_true", help="also the 8 largest modules")
    args = parser.parse_args()
    edges = graph(args.src)
    by_source: dict[str, list[str]] = defaultdict(list)
    upward = []
    for (a, b), modules in sorted(edges.items()):
        by_source[a].append(b)
        if layer(a) < layer(b):
            upward.append(f"{a} -> {b} (in {', '.join(sorted(modules))})")
    for a in sorted(by_source, key=lambda p: (layer(p), p)):
        print(f"{a:10} -> {', '.join(sorted(by_source[a], key=lambda p: (layer(p), p)))}")
    print(f"\nupward imports: {len(upward)}")
    for line in upward:
        print("  " + line)
    if args.sizes:
        files = sorted(
            (
                (len(p.read_text().splitlines()), p.relative_to(args.src))
                for p in args.src.rglob("*.py")
            ),
            reverse=True,
        )
        print("\nlargest modules (lines):")
        for n, p in files[:8]:
            print(f"  {n:5} {p}")


if __name__ == "__main__":
    main()
