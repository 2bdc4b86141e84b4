"""Print the import graph between EventRelay's packages, its cycles, and the imports that break the layer rule.

    .venv/bin/python -m tools.import_graph          # the graph, cycles and violations; exit 1 when there are any

It reads the source with grimp (the library import-linter is built on), so function-local imports count too:
hiding an import inside a function does not hide it from the graph.
"""

from __future__ import annotations

import sys
from collections import defaultdict

import grimp

# Highest first: a package may import those below it, never those above (docs/architecture.md).
LAYERS: list[list[str]] = [
    ["api", "grpc_api", "ws_api", "console"],
    ["webhooks", "consumers"],
    ["events"],
    ["topics"],
    ["eventrelay"],
]
# The kernel's own exceptions: the URL and ASGI routing tables name every transport by design.
ROUTING = {"eventrelay.urls", "eventrelay.asgi", "eventrelay.settings"}
GENERATED = "eventrelay.v1"


def packages() -> list[str]:
    return [name for layer in LAYERS for name in layer if _importable(name)]


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def package_of(module: str) -> str:
    return module.split(".", 1)[0]


def layer_of(package: str) -> int:
    for index, layer in enumerate(LAYERS):
        if package in layer:
            return index
    raise KeyError(package)


def main() -> int:
    names = packages()
    graph = grimp.build_graph(*names, include_external_packages=False, exclude_type_checking_imports=True)
    arrows: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            a, b = package_of(importer), package_of(imported)
            if a != b:
                arrows[(a, b)].append((importer, imported))
    problems = 0
    print("package arrows (importer -> imported: imports)")
    for (a, b), pairs in sorted(arrows.items()):
        print(f"  {a:>10} -> {b:<10} {len(pairs)}")
    print("\nimports that run up the layers or sideways between transports")
    for (a, b), pairs in sorted(arrows.items()):
        if layer_of(a) < layer_of(b):
            continue
        for importer, imported in pairs:
            if importer in ROUTING:
                continue
            problems += 1
            print(f"  {importer} -> {imported}")
    print("\nthe domain importing generated protobuf code")
    for importer in sorted(graph.modules):
        if package_of(importer) in {"events", "topics", "webhooks", "consumers"} or (
            package_of(importer) == "eventrelay" and not importer.startswith(GENERATED)
        ):
            for imported in graph.find_modules_directly_imported_by(importer):
                if imported.startswith(GENERATED):
                    problems += 1
                    print(f"  {importer} -> {imported}")
    print("\npackage cycles")
    seen: set[frozenset[str]] = set()
    for a, b in sorted(arrows):
        if (b, a) in arrows and frozenset((a, b)) not in seen and not _routing_only(arrows, a, b):
            seen.add(frozenset((a, b)))
            problems += 1
            print(f"  {a} <-> {b}")
    print("\nmodule cycles inside a package")
    for name in names:
        for cycle in _module_cycles(graph, name):
            problems += 1
            print("  " + " -> ".join([*cycle, cycle[0]]))
    print(f"\n{problems} problem(s)")
    return 1 if problems else 0


def _routing_only(arrows: dict[tuple[str, str], list[tuple[str, str]]], a: str, b: str) -> bool:
    """Whether one direction of a package cycle is only the kernel's routing tables naming a transport."""
    return all(importer in ROUTING for importer, _ in arrows[(a, b)]) or all(
        importer in ROUTING for importer, _ in arrows[(b, a)]
    )


def _module_cycles(graph: grimp.ImportGraph, package: str) -> list[list[str]]:
    """Two-module cycles (a imports b, b imports a) inside one package: the kind a local import hides."""
    modules = sorted(m for m in graph.modules if package_of(m) == package)
    found = []
    for a, b in ((a, b) for a in modules for b in modules if a < b):
        if graph.direct_import_exists(importer=a, imported=b) and graph.direct_import_exists(importer=b, imported=a):
            found.append([a, b])
    return found


if __name__ == "__main__":
    sys.exit(main())
