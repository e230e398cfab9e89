#!/usr/bin/env python3
"""Report import cycles between the modules of the `robobench` package (a CI check: exit 1 on a cycle).

Every `robobench/*.py` is parsed with `ast`; every import anywhere in the file counts (module level, inside functions,
under `if TYPE_CHECKING:`), relative (`from .core import x`, `from . import data`) and absolute
(`import robobench.data`,
`from robobench.core import x`, `from robobench import data`), plus `importlib.import_module('robobench.x')` and
`__import__('robobench.x', ...)` calls with a constant name. Imports done through computed names (e.g. the lazy
`robobench.__getattr__`) are not seen.

usage: python scripts/import_cycles.py [PACKAGE_DIR]   (default: robobench/ next to this script's parent)"""
from __future__ import annotations
import ast, sys
from pathlib import Path

def module_names(pkg: Path) -> dict[str, Path]:
    "`robobench.x` -> file, `robobench` -> __init__.py."
    out = {}
    for f in sorted(pkg.glob('*.py')):
        out[pkg.name if f.stem == '__init__' else f'{pkg.name}.{f.stem}'] = f
    return out

def _target(name: str, mods: dict) -> str | None:
    "The package module an absolute dotted name refers to (`robobench.core.x` -> `robobench.core`), or None."
    parts = name.split('.')
    for i in range(len(parts), 0, -1):
        cand = '.'.join(parts[:i])
        if cand in mods: return cand
    return None

def imports_of(mod: str, path: Path, mods: dict) -> list[tuple[str, int, bool]]:
    "(imported package module, line, at module level?) for every import in `path`."
    pkg = mod if path.stem == '__init__' else mod.rpartition('.')[0]
    tree = ast.parse(path.read_text(), str(path))
    top = {id(n) for n in tree.body}
    for n in tree.body:  # module level also covers try/if blocks at the top of the file
        if isinstance(n, (ast.Try, ast.If, ast.With)): top |= {id(m) for m in ast.walk(n)}
    out = []
    def add(name, node):
        t = _target(name, mods)
        if t is not None: out.append((t, node.lineno, id(node) in top))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names: add(a.name, node)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split('.')
                if node.level > 1: base = base[:len(base) - node.level + 1]
                base = '.'.join(base)
                src = f'{base}.{node.module}' if node.module else base
            else: src = node.module or ''
            if node.module is None or src in mods and src == pkg:  # `from . import x` / `from robobench import x`
                for a in node.names:
                    sub = f'{src}.{a.name}'
                    add(sub if sub in mods else src, node)
            else: add(src, node)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            f = node.func
            fname = f.attr if isinstance(f, ast.Attribute) else getattr(f, 'id', None)
            if fname in ('import_module', '__import__'): add(node.args[0].value, node)
    return out

def graph(pkg: Path) -> tuple[dict[str, dict[str, list]], dict]:
    mods = module_names(pkg)
    g = {m: {} for m in mods}
    for m, p in mods.items():
        for t, line, top in imports_of(m, p, mods):
            if t != m: g[m].setdefault(t, []).append((line, top))
    return g, mods

def sccs(g: dict) -> list[list[str]]:
    "Tarjan's strongly connected components (iterative)."
    index, low, on, stack, out, i = {}, {}, set(), [], [], 0
    for root in g:
        if root in index: continue
        work = [(root, iter(sorted(g[root])))]
        index[root] = low[root] = i; i += 1; stack.append(root); on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = i; i += 1; stack.append(w); on.add(w)
                    work.append((w, iter(sorted(g[w]))))
                elif w in on: low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work: low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop(); on.discard(w); comp.append(w)
                    if w == v: break
                out.append(sorted(comp))
    return out

def a_cycle(g: dict, comp: list[str]) -> list[str]:
    "One concrete cycle inside a strongly connected component (BFS back to the start)."
    start, inside = comp[0], set(comp)
    prev, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(g[v]):
                if w not in inside: continue
                if w == start:
                    path = [v]
                    while prev[path[-1]] is not None: path.append(prev[path[-1]])
                    return path[::-1] + [start]  # start ... v, start
                if w not in prev: prev[w] = v; nxt.append(w)
        frontier = nxt
    return comp

def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    pkg = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent / 'robobench'
    g, mods = graph(pkg)
    n_edges = sum(len(v) for v in g.values())
    cycles = [c for c in sccs(g) if len(c) > 1]
    if not cycles:
        print(f'import_cycles: no cycle among {len(mods)} modules '
              f'({n_edges} import edges, function-level imports included)')
        return 0
    for comp in cycles:
        cyc = a_cycle(g, comp)
        hops = []
        for a, b in zip(cyc, cyc[1:]):
            line, top = g[a][b][0]
            hops.append(f'  {a} -> {b}   ({mods[a].name}:{line}, {"module level" if top else "inside a function"})')
        print(f'import cycle: {" -> ".join(cyc)}\n' + '\n'.join(hops)
              + (f'\n  (strongly connected: {", ".join(comp)})' if len(comp) > len(cyc) - 1 else ''))
    return 1

if __name__ == '__main__': sys.exit(main())
