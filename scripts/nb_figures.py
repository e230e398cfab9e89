#!/usr/bin/env python3
"""Measure the rhythm of the notebooks in nbs/*.ipynb (top level only; nbs/runs/ is not measured).

Usage: `python scripts/nb_figures.py [--path DIR] [--json]`: a table per notebook plus totals, or the totals as JSON.

Definitions (every figure is computed from the notebooks' JSON; nothing is executed):

- **export cell**: a code cell whose leading directive lines (the `#|` lines before any other line) include
  `#| export`, `#|export` or `#| exports`.
- **export cell lines**: the cell's non-blank source lines minus its `#| ...` directive lines (comments count).
  Reported as median and p90 over all export cells, both nearest-rank (the value at 1-based rank ceil(q * n) of the
  sorted list), and the max.
- **definitions**: the statements at the top level of an export cell that are a `def`, `async def` or `class`, plus
  each name bound by a top-level assignment (`=`, annotated `=`) that is UPPER_CASE (a leading `_` allowed) or
  public (no leading `_`). `defs/cell` is their mean per export cell (the JSON also gives `defclass_per_cell`, the
  mean of the `def`/`class` statements alone).
- **public definitions / exercised**: the definitions whose name does not start with `_`. A function decorated with
  fastcore's `@patch` (or `@patch_to(Class)`) is named `Class.method` (class from the first argument's annotation,
  or from `patch_to`'s argument); it is public when the method name is, and is looked up by the method name.
  A public definition is *exercised* when its name occurs as a whole word (regex `\\bname\\b`) in one of the next
  two code cells after its export cell that are not export cells themselves (export cells in between are skipped;
  markdown is not a code cell). Reported as a percentage.
- **single-letter assignments**: in export cells, every `Name` target of an `Assign`, `AugAssign`, `AnnAssign`,
  `for`/`async for` loop or `with ... as` whose identifier is one letter (`_` is not a letter), looked for at any
  depth (tuple/list/starred targets unpacked). Comprehension targets and lambda arguments are not such statements,
  so they never count; function arguments do not count either.
"""
import argparse, ast, json, math, re, sys
from pathlib import Path

EXPORT_DIRECTIVES = {'export', 'exports'}


def directives(src: str) -> list[str]:
    "The leading `#|` directive lines of a cell's source, each as its first word (`#| export` -> 'export')."
    found = []
    for line in src.splitlines():
        if not line.startswith('#|'): break
        words = line[2:].split()
        if words: found.append(words[0])
    return found


def is_export(cell: dict) -> bool:
    return cell['cell_type'] == 'code' and bool(EXPORT_DIRECTIVES & set(directives(_src(cell))))


def _src(cell: dict) -> str:
    src = cell.get('source', '')
    return ''.join(src) if isinstance(src, list) else src


def body_lines(src: str) -> list[str]:
    "Non-blank source lines without `#| ...` directive lines."
    return [line for line in src.splitlines() if line.strip() and not line.lstrip().startswith('#|')]


def parse(src: str) -> ast.Module | None:
    "Parse a cell; IPython magics and shell lines (`%...`, `!...`) are blanked first. None when it still fails."
    code = '\n'.join('' if line.lstrip().startswith(('%', '!')) else line for line in src.splitlines())
    try: return ast.parse(code)
    except SyntaxError: return None


def _is_defname(name: str) -> bool:
    return not name.startswith('_') or name.lstrip('_').isupper()


def _names(target) -> list[str]:
    "Names bound by an assignment target (tuples, lists and starred targets unpacked; attributes/subscripts not)."
    if isinstance(target, ast.Name): return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)): return [n for elt in target.elts for n in _names(elt)]
    if isinstance(target, ast.Starred): return _names(target.value)
    return []


def _patch_class(fn) -> str | None:
    "`Class` for a function decorated with fastcore's `@patch`/`@patch_to(Class)`, else None."
    for dec in fn.decorator_list:
        call = dec if isinstance(dec, ast.Call) else None
        name = ast.unparse(call.func if call else dec).split('.')[-1]
        if name == 'patch_to' and call and call.args: return ast.unparse(call.args[0])
        if name == 'patch':
            args = fn.args.posonlyargs + fn.args.args
            ann = args[0].annotation if args else None
            return ast.unparse(ann) if ann is not None else '?'
    return None


def definitions(tree: ast.Module) -> list[tuple[str, str]]:
    "(display name, name to look for) of each top-level definition, in order."
    found = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            cls = _patch_class(node)
            found.append((f'{cls}.{node.name}' if cls else node.name, node.name))
        elif isinstance(node, ast.ClassDef): found.append((node.name, node.name))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            if isinstance(node, ast.AnnAssign) and node.value is None: continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            found += [(n, n) for t in targets for n in _names(t) if _is_defname(n)]
    return found


def single_letter_assignments(tree: ast.Module) -> list[str]:
    "One-letter names bound by assignment, for, async for and with-as statements anywhere in the tree."
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign): targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.For, ast.AsyncFor)): targets = [node.target]
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            targets = [item.optional_vars for item in node.items if item.optional_vars is not None]
        else: continue
        found += [n for t in targets for n in _names(t) if len(n) == 1 and n.isalpha()]
    return found


def nearest_rank(values: list[int], q: float):
    if not values: return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def measure_notebook(path: Path) -> dict:
    "Raw figures of one notebook: export cell line counts, definitions per cell, exercised flags, single letters."
    cells = [c for c in json.loads(path.read_text())['cells'] if c['cell_type'] == 'code']
    lines, defs_per_cell, defclass, exercised, singles, unparsed = [], [], [], [], [], 0
    for i, cell in enumerate(cells):
        if not is_export(cell): continue
        src = _src(cell)
        lines.append(len(body_lines(src)))
        tree = parse(src)
        if tree is None:
            unparsed += 1
            defs_per_cell.append(0)
            defclass.append(0)
            continue
        defs = definitions(tree)
        defs_per_cell.append(len(defs))
        defclass.append(sum(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for n in tree.body))
        singles += single_letter_assignments(tree)
        following = [_src(c) for c in cells[i + 1:] if not is_export(c)][:2]
        for shown, name in defs:
            if name.startswith('_'): continue
            pattern = re.compile(rf'\b{re.escape(name)}\b')
            exercised.append((shown, any(pattern.search(s) for s in following)))
    return dict(lines=lines, defs=defs_per_cell, defclass=defclass, exercised=exercised, singles=singles,
                unparsed=unparsed)


def figures(raw: dict) -> dict:
    "Summary figures from raw ones (a notebook's, or all notebooks' merged)."
    n_pub, n_ex = len(raw['exercised']), sum(hit for _, hit in raw['exercised'])
    return dict(export_cells=len(raw['lines']), median_lines=nearest_rank(raw['lines'], 0.5),
                p90_lines=nearest_rank(raw['lines'], 0.9), max_lines=max(raw['lines'], default=None),
                defs_per_cell=round(sum(raw['defs']) / len(raw['defs']), 2) if raw['defs'] else None,
                defclass_per_cell=round(sum(raw['defclass']) / len(raw['defclass']), 2) if raw['defclass'] else None,
                public_defs=n_pub, exercised=n_ex, exercised_pct=round(100 * n_ex / n_pub, 1) if n_pub else None,
                single_letter=len(raw['singles']), unparsed_cells=raw['unparsed'])


def merge(raws: dict) -> dict:
    total = dict(lines=[], defs=[], defclass=[], exercised=[], singles=[], unparsed=0)
    for nb, raw in raws.items():
        total['lines'] += raw['lines']
        total['defs'] += raw['defs']
        total['defclass'] += raw['defclass']
        total['exercised'] += [(f'{nb}:{name}', hit) for name, hit in raw['exercised']]
        total['singles'] += raw['singles']
        total['unparsed'] += raw['unparsed']
    return total


COLUMNS = [('notebook', 'notebook', 28), ('export_cells', 'cells', 6), ('median_lines', 'median', 7),
           ('p90_lines', 'p90', 5), ('max_lines', 'max', 5), ('defs_per_cell', 'defs/c', 7),
           ('public_defs', 'public', 7), ('exercised_pct', 'exerc%', 7), ('single_letter', '1-letter', 9)]


def _row(values: dict) -> str:
    cells = []
    for key, _, width in COLUMNS:
        val = values.get(key)
        text = '-' if val is None else str(val)
        cells.append(text.ljust(width) if key == 'notebook' else text.rjust(width))
    return ' '.join(cells)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--path', default=str(Path(__file__).resolve().parent.parent / 'nbs'), help='notebooks dir')
    ap.add_argument('--json', action='store_true', help='print the totals as JSON')
    args = ap.parse_args(argv)
    paths = sorted(Path(args.path).glob('*.ipynb'))
    if not paths:
        print(f'no notebooks in {args.path}', file=sys.stderr)
        return 1
    raws = {p.stem: measure_notebook(p) for p in paths}
    totals = figures(merge(raws))
    if args.json:
        print(json.dumps(totals, indent=2))
        return 0
    print(' '.join(h.ljust(w) if k == 'notebook' else h.rjust(w) for k, h, w in COLUMNS))
    for nb, raw in raws.items(): print(_row(dict(notebook=nb, **figures(raw))))
    print(_row(dict(notebook='TOTAL', **totals)))
    if totals['unparsed_cells']: print(f"{totals['unparsed_cells']} export cell(s) did not parse", file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
