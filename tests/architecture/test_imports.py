"""The package's imports flow one way: no cycles, no module importing a layer above its own,
no private name (`_x`) taken from another package, no two classes of one name.

The layer map is the README's ("Architecture"); a module not in it fails the test, so a new module
gets a place on purpose. Every import counts, also those inside functions; only imports under
`if TYPE_CHECKING:` (never run) are left out.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from fnmatch import fnmatch
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "ppcswitch"

# Lowest first. A module may import its own layer and those below it.
LAYERS: list[tuple[str, list[str]]] = [
    ("keys", ["ppcswitch.keys"]),
    ("domain", [
        "ppcswitch", "ppcswitch.money", "ppcswitch.numbers", "ppcswitch.channel_vars", "ppcswitch.calls",
        "ppcswitch.config", "ppcswitch.timezones", "ppcswitch.qualification", "ppcswitch.cpu",
        "ppcswitch.routing", "ppcswitch.routing.model", "ppcswitch.routing.engine", "ppcswitch.routing.plan",
        "ppcswitch.routing.rules", "ppcswitch.routing.geo", "ppcswitch.routing.limits", "ppcswitch.routing.counters",
        "ppcswitch.routing.reservations", "ppcswitch.routing.live",
        "ppcswitch.billing", "ppcswitch.billing.rules",
        "ppcswitch.fraud", "ppcswitch.fraud.score", "ppcswitch.fraud.signals", "ppcswitch.fraud.lists",
        "ppcswitch.fraud.alerts",
        "ppcswitch.rtb", "ppcswitch.attribution", "ppcswitch.attribution.clean", "ppcswitch.attribution.ratelimit",
        "ppcswitch.attribution.pools", "ppcswitch.attribution.postback",
        "ppcswitch.intelligence", "ppcswitch.intelligence.redact", "ppcswitch.intelligence.rules",
        "ppcswitch.storage.validate", "ppcswitch.web.numbers_import",
    ]),
    ("storage", [
        "ppcswitch.storage", "ppcswitch.storage.*", "ppcswitch.billing.ledger", "ppcswitch.billing.reports",
        "ppcswitch.billing.rerate", "ppcswitch.attribution.store", "ppcswitch.attribution.outbox",
        "ppcswitch.fraud.store", "ppcswitch.intelligence.store", "ppcswitch.web.store", "ppcswitch.web.portal_store",
        "ppcswitch.web.zones", "ppcswitch.web.security", "ppcswitch.attribution.codes", "ppcswitch.routing.shared",
    ]),
    ("edges", [
        "ppcswitch.metrics", "ppcswitch.agi", "ppcswitch.agi.*", "ppcswitch.ami", "ppcswitch.ami.*",
        "ppcswitch.tracker", "ppcswitch.tracker.*", "ppcswitch.routing.service", "ppcswitch.rtb.auction",
        "ppcswitch.attribution.service", "ppcswitch.attribution.providers",
        "ppcswitch.fraud.service", "ppcswitch.fraud.scorer", "ppcswitch.fraud.runtime",
        "ppcswitch.intelligence.engine", "ppcswitch.intelligence.worker", "ppcswitch.intelligence.runtime",
        "ppcswitch.recovery", "ppcswitch.web", "ppcswitch.web.*",
    ]),
    ("pipeline", ["ppcswitch.pipeline"]),
    ("app", ["ppcswitch.app"]),
    ("cli", ["ppcswitch.cli", "ppcswitch.cli.*", "ppcswitch.*.cli", "ppcswitch.storage.cli", "ppcswitch.__main__", "ppcswitch.devrun",
             "ppcswitch.sandbox", "ppcswitch.cluster"]),
]


def layer_of(module: str) -> int | None:
    """The most specific pattern wins: an exact name beats a wildcard, a longer pattern a shorter one."""
    matches = [((0 if "*" in pattern else 1, len(pattern)), level)
               for level, (_, patterns) in enumerate(LAYERS) for pattern in patterns if fnmatch(module, pattern)]
    return max(matches)[1] if matches else None


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if "migrations" in parts:  # alembic's scripts: imported by alembic, never by the package
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


class _Imports(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, known: dict[str, Path]):
        self.package = module if is_package else module.rpartition(".")[0]
        self.known = known
        self.targets: set[str] = set()
        self.private: list[tuple[str, str]] = []

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
                (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] == "ppcswitch":
                self.targets.add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")[: len(self.package.split(".")) - node.level + 1]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        if source.split(".")[0] != "ppcswitch":
            return
        for alias in node.names:
            submodule = f"{source}.{alias.name}"
            if submodule in self.known:
                self.targets.add(submodule)
            else:
                self.targets.add(source)
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    self.private.append((source, alias.name))


def graph():
    known = modules()
    edges, private = {}, {}
    for name, path in known.items():
        visitor = _Imports(name, path.name == "__init__.py", known)
        visitor.visit(ast.parse(path.read_text(), str(path)))
        edges[name] = {t for t in visitor.targets if t in known and t != name}
        private[name] = visitor.private
    return known, edges, private


def owner(module: str) -> str:
    """The package a module belongs to: ppcswitch.web.panel -> ppcswitch.web; top-level modules are their own."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_every_module_has_a_layer():
    known, _, _ = graph()
    assert [m for m in known if layer_of(m) is None] == []


def test_no_module_imports_a_layer_above_its_own():
    known, edges, _ = graph()
    upward = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
              for m in sorted(known) for t in sorted(edges[m]) if layer_of(t) > layer_of(m)]
    assert upward == []


def test_no_import_cycle():
    known, edges, _ = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(known):
        if v not in index:
            visit(v)
    assert cycles == []


def _crosses(source: str, module: str) -> bool:
    """Whether `module` reaching into `source` crosses a package (top-level modules are each their own)."""
    return owner(source) != owner(module) or (source.count(".") == 1 and module.count(".") == 1 and source != module)


def test_no_private_name_imported_from_another_package():
    known, _, private = graph()
    crossing = [f"{m} imports {name} from {source}" for m in sorted(known) for source, name in private[m]
                if _crosses(source, m)]
    # ... nor reached as an attribute of an imported module (`from ppcswitch.storage import repo; repo._x`).
    for module, path in sorted(known.items()):
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("ppcswitch"):
                aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names
                                if f"{node.module}.{a.name}" in known})
            elif isinstance(node, ast.Import):
                aliases.update({a.asname: a.name for a in node.names if a.asname and a.name in known})
        crossing += [f"{module} uses {aliases[node.value.id]}.{node.attr}" for node in ast.walk(tree)
                     if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                     and node.value.id in aliases and node.attr.startswith("_") and not node.attr.startswith("__")
                     and _crosses(aliases[node.value.id], module)]
    assert crossing == []


def test_no_two_classes_of_one_name():
    known, _, _ = graph()
    where = defaultdict(list)
    for name, path in known.items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                where[node.name].append(name)
    # One exception, one meaning in two forms: a table (storage/models*.py) and the frozen value the
    # domain reads from it (routing.model.Buyer from the buyers table, intelligence.rules.PhraseRule ...).
    def row_and_value(mods: list[str]) -> bool:
        rows = [m for m in mods if m.startswith("ppcswitch.storage.models")]
        return len(mods) == 2 and len(rows) == 1 and LAYERS[layer_of(({*mods} - {*rows}).pop())][0] == "domain"

    assert {cls: mods for cls, mods in where.items() if len(mods) > 1 and not row_and_value(mods)} == {}


def test_the_layer_map_is_in_the_readme():
    readme = (PACKAGE.parent / "README.md").read_text()
    for name, _ in LAYERS:
        assert f"**{name}**" in readme, f"README's architecture section lacks the {name} layer"
