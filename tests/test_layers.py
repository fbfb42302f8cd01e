"""The package's layering, checked on the source.

This file is the single source of truth for the layers of `diffuse`; docs/architecture.md
mirrors it. Every top-level module or package under src/diffuse belongs to exactly one layer:

    bottom      processes, denoiser, losses, nets, codecs, samplers, guidance,
                gaussian_mixture, shapes, text
                    the mathematics and the networks; they know nothing of tasks or commands
    foundation  model_folder, text_model_folder, controlnet_folder, fitted_solvers, interop,
                config, typed_tables, io, pngmeta, data_files, video_files
                    the saved-model format, the diffusers layout, typed configs, atomic writes
                    and file hashes, PNG metadata: small things every task may use
    tasks       pipelines, training, metrics
                    side by side: pipelines and training never import each other; metrics may
                    sample through pipelines but never imports training
    front       cli, server, __main__
                    argument parsing, printing, HTTP; the library never imports them
    root        the package's own __init__.py (a lazy convenience entry point)

Contracts (imports point down only):

- bottom imports none of pipelines, training, metrics, cli, server;
- foundation imports none of pipelines, training, metrics, cli, server;
- pipelines does not import training, and training does not import pipelines;
- metrics imports neither training nor cli;
- nothing outside cli imports cli (except diffuse/__main__.py, the `python -m diffuse` entry),
  and nothing outside cli imports server.

Imports are found with `ast`, at module top and inside functions alike (a deferred import is
still a dependency), including relative imports.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "diffuse"

LAYERS: dict[str, frozenset[str]] = {
    "bottom": frozenset(
        {
            "processes",
            "denoiser",
            "losses",
            "nets",
            "codecs",
            "samplers",
            "guidance",
            "gaussian_mixture",
            "shapes",
            "text",
        }
    ),
    "foundation": frozenset(
        {
            "model_folder",
            "interop",
            "fitted_solvers",
            "config",
            "typed_tables",
            "text_model_folder",
            "controlnet_folder",
            "io",
            "pngmeta",
            "data_files",
            "video_files",
        }
    ),
    "tasks": frozenset({"pipelines", "training", "metrics"}),
    "front": frozenset({"cli", "server", "__main__"}),
    "root": frozenset({"__init__"}),
}

UPPER = frozenset({"pipelines", "training", "metrics", "cli", "server"})

# For each importing component (or "root"): the components it must not import.
FORBIDDEN: dict[str, frozenset[str]] = {
    **{name: UPPER for name in LAYERS["bottom"]},
    **{name: UPPER for name in LAYERS["foundation"]},
    "pipelines": frozenset({"training", "cli", "server"}),
    "training": frozenset({"pipelines", "cli", "server"}),
    "metrics": frozenset({"training", "cli", "server"}),
    "root": frozenset({"cli", "server"}),
}
# Who may import the front layer: cli itself, and the `python -m diffuse` entry point.
MAY_IMPORT_CLI = frozenset({"cli", "__main__"})
MAY_IMPORT_SERVER = frozenset({"cli", "server"})


@dataclass(frozen=True)
class Import:
    """One `diffuse.*` import found in a source file."""

    path: Path  # the importing file
    line: int
    target: str  # the imported module, dotted (e.g. "diffuse.training.loop")

    def __str__(self) -> str:
        return f"{self.path.relative_to(SRC)}:{self.line} -> {self.target}"


def module_name(path: Path) -> str:
    """Dotted module name of a file under src/ (a package's __init__ is the package)."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def component_of_file(path: Path) -> str:
    """The top-level component (layer member) a source file belongs to."""
    rel = path.relative_to(PACKAGE)
    if len(rel.parts) == 1:
        return rel.stem  # e.g. "denoiser", "__init__", "__main__"
    return rel.parts[0]


def component_of_module(target: str) -> str:
    """The top-level component of a dotted `diffuse...` module name ("root" for `diffuse`)."""
    parts = target.split(".")
    return parts[1] if len(parts) > 1 else "root"


def top_level_components() -> set[str]:
    """Every top-level module and package under src/diffuse."""
    names = set()
    for entry in PACKAGE.iterdir():
        if entry.is_dir() and (entry / "__init__.py").exists():
            names.add(entry.name)
        elif entry.suffix == ".py":
            names.add(entry.stem)
    return names


def diffuse_imports(path: Path, text: str | None = None) -> list[Import]:
    """Every import of a `diffuse` module made anywhere in the file (top level or nested).

    `from diffuse import x` counts as importing `diffuse.x` when `x` is a top-level component,
    and as importing the root package otherwise. Relative imports are resolved against the file.
    `text` replaces the file's contents (to check the checker on made-up code).
    """
    if text is None:
        text = path.read_text(encoding="utf-8")
    tree = ast.parse(text, filename=str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    components = top_level_components()
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "diffuse" or alias.name.startswith("diffuse."):
                    found.append(Import(path, node.lineno, alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module != "diffuse" and not module.startswith("diffuse."):
                continue
            if module == "diffuse":
                for alias in node.names:
                    sub = f"diffuse.{alias.name}" if alias.name in components else "diffuse"
                    found.append(Import(path, node.lineno, sub))
            else:
                found.append(Import(path, node.lineno, module))
    return found


def source_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def layer_of(component: str) -> str:
    for layer, members in LAYERS.items():
        if component in members:
            return layer
    raise KeyError(component)


def violations() -> list[str]:
    """Every import that breaks a contract, as 'file:line -> module (rule)'."""
    out = []
    for path in source_files():
        src_component = component_of_file(path)
        rules = FORBIDDEN.get(src_component, frozenset())
        if src_component == "__init__":
            rules = FORBIDDEN["root"]
        for imp in diffuse_imports(path):
            target = component_of_module(imp.target)
            if target == src_component:
                continue
            if target in rules:
                out.append(f"{imp}  ({src_component} must not import {target})")
            elif target == "cli" and src_component not in MAY_IMPORT_CLI:
                out.append(f"{imp}  (only cli and __main__ may import cli)")
            elif target == "server" and src_component not in MAY_IMPORT_SERVER:
                out.append(f"{imp}  (only cli may import server)")
    return out


def test_every_top_level_module_has_a_layer() -> None:
    placed = {name for members in LAYERS.values() for name in members}
    unplaced = sorted(top_level_components() - placed)
    assert not unplaced, (
        f"modules under src/diffuse with no layer: {unplaced}; add each to LAYERS in "
        "tests/test_layers.py and to docs/architecture.md"
    )


def test_layers_do_not_overlap() -> None:
    seen: dict[str, str] = {}
    for layer, members in LAYERS.items():
        for name in members:
            assert name not in seen, f"{name} is in both {seen[name]} and {layer}"
            seen[name] = layer


def test_the_checker_sees_nested_and_relative_imports() -> None:
    # Made-up code, parsed as if it lived at samplers/_probe.py: a relative import, a relative
    # import of a sibling package, and deferred imports inside a function must all be found.
    code = (
        "from .base import StepInfo\n"
        "from .. import training\n"
        "def f():\n"
        "    from diffuse.cli.arguments import parse_seeds\n"
        "    import diffuse.pipelines.text_to_image\n"
        "    from diffuse import __version__\n"
    )
    probe = PACKAGE / "samplers" / "_probe.py"
    targets = [(i.line, i.target) for i in diffuse_imports(probe, text=code)]
    assert targets == [
        (1, "diffuse.samplers.base"),
        (2, "diffuse.training"),
        (4, "diffuse.cli.arguments"),
        (5, "diffuse.pipelines.text_to_image"),
        (6, "diffuse"),
    ]


def test_imports_point_down_only() -> None:
    found = violations()
    assert not found, f"{len(found)} imports break the layering:\n" + "\n".join(found)


def test_importing_samplers_loads_no_task_or_command_code(fresh_imports) -> None:
    layers = (["diffuse", "training"], ["diffuse", "pipelines"], ["diffuse", "cli"])
    loaded = [m for m in fresh_imports("import diffuse.samplers") if m.split(".")[:2] in layers]
    assert not loaded, f"`import diffuse.samplers` also imported: {loaded}"
