"""The layering that keeps the project readable, and flags that explain themselves."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "data", "transfer_learning", "vae")


def _imports() -> dict[str, set[str]]:
    """Module → project modules it imports anywhere (top level or inside functions)."""
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = path
    modules["main"] = ROOT / "main.py"
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            found |= {t for t in targets if t in modules and t != name}
        graph[name] = found
    return graph


def test_the_two_halves_never_import_each_other():
    graph = _imports()
    crossing = [(m, d) for m, deps in graph.items() for d in deps
                if {m.split(".")[0], d.split(".")[0]} == {"vae", "transfer_learning"}]
    assert crossing == []
    below = [(m, d) for m, deps in graph.items() if m.split(".")[0] in ("common", "data") for d in deps
             if d.split(".")[0] in ("vae", "transfer_learning") or d == "main"]
    assert below == [], "common/ and data/ must not import the layers above them"
    assert not [d for d in graph if d.startswith("common") and any(x.startswith("data") for x in graph[d])]


def test_no_import_cycles():
    graph = _imports()
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node, path):
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def _options(help_text: str) -> list[tuple[str, str]]:
    """(option, its help) for each `--option` entry of an argparse help screen."""
    entries, current = [], None
    for line in help_text.splitlines():
        match = re.match(r"^  (-\S.*?)(?:\s{2,}(.*))?$", line)
        if match:
            current = [match.group(1).split()[0].rstrip(","), match.group(2) or ""]
            entries.append(current)
        elif current is not None and line.startswith(" " * 10):
            current[1] += " " + line.strip()
    return [(name, text) for name, text in entries if name.startswith("--")]


@pytest.mark.parametrize("command, at_least", [
    ([sys.executable, "main.py", "train", "--help"], 16),
    ([sys.executable, "transfer_learning/train.py", "--help"], 16),
    ([sys.executable, "transfer_learning/classify.py", "--help"], 16),
    ([sys.executable, "-m", "transfer_learning.weak_labels", "--help"], 10),
    ([sys.executable, "-m", "transfer_learning.review", "--help"], 7),
    ([sys.executable, "-m", "vae.study", "run", "--help"], 10),
    ([sys.executable, "-m", "vae.study", "park", "--help"], 2),
    ([sys.executable, "-m", "vae.study", "report", "--help"], 3),
    ([sys.executable, "-m", "data.pipeline", "to-tfrecords", "--help"], 4),
    ([sys.executable, "-m", "data.synthetic", "--help"], 4),
    ([sys.executable, "-m", "data.download", "--help"], 2),
])
def test_every_option_is_described_not_only_its_default(command, at_least):
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    options = _options(out)
    assert len(options) >= at_least
    bare = [name for name, text in options if not re.sub(r"\(default: [^)]*\)", "", text).strip()]
    assert bare == [], f"options without a description: {bare}"
