#!/usr/bin/env python3
"""Fail when a module outside a simulator's own files names a simulator (a `make nbcheck` check).

A simulator's own files are `robobench/envs_<name>*.py` and `robobench/experts_<name>*.py`; everything robobench
knows about a simulator lives there, in its `Backend` record, and the rest of the package asks the registry.
The names looked for come from the registry itself: every built-in backend's name, its task names (CamelCase ones,
matched case-sensitively), its aliases, and the packages it pins that no other backend pins (`mani-skill`,
`mani_skill`, `gym-aloha`, ...). Comments and docstrings count: a module that explains a simulator is a module that
knows about it. `_modidx.py` (nbdev's generated index) is skipped. A name right after `openpi-` or `examples/` is
openpi's name for one of its example clients (`openpi-aloha`, `examples/aloha_sim`: a robot, not a backend) and passes.

usage: python scripts/sim_names.py [PACKAGE_DIR]   (exit 1 and one line per hit when a module names a simulator)"""
from __future__ import annotations
import collections, re, sys
from pathlib import Path

def simulator_names() -> dict[str, list[re.Pattern]]:
    "{backend name: patterns} for the package's own backends."
    from robobench.envs import backends
    own = [b for b in backends() if getattr(b.factory(), '__module__', '').startswith('robobench.')]
    pins = collections.Counter(d for b in own for d in b.packages)
    out = {}
    for b in own:
        words = {b.name, *b.aliases, *(d for d in b.packages if pins[d] == 1)}
        words |= {w.replace('-', '_') for w in words} | {w.replace('_', '-') for w in words}
        pats = [re.compile(rf'(?<![a-z0-9]){re.escape(w.lower())}' + (r'(?![a-z])' if len(w) < 5 else ''))
                for w in sorted(words)]
        tasks = {t.name.split('-')[0] for t in b.tasks} | {a for t in b.tasks for a in t.aliases}
        pats += [re.compile(rf'(?<![A-Za-z]){re.escape(t)}') for t in sorted(tasks) if re.search(r'[a-z][A-Z]', t)]
        out[b.name] = pats
    return out

EXEMPT_BEFORE = ('openpi-', 'examples/')   # openpi's example clients are named after robots

def own_files(pkg: Path) -> set[Path]:
    "Files that belong to a simulator: envs_*.py and experts_*.py."
    return {p for p in pkg.glob('*.py') if p.name.startswith(('envs_', 'experts_'))}

def hits(pkg: Path) -> list[str]:
    names, skip = simulator_names(), own_files(pkg) | {pkg / '_modidx.py'}
    out = []
    for path in sorted(pkg.glob('*.py')):
        if path in skip: continue
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            low = line.lower()
            for backend, pats in names.items():
                found = next((m.group(0) for p in pats for m in p.finditer(line if p.pattern.startswith('(?<![A-Z')
                                                                             else low)
                              if not low[:m.start()].endswith(EXEMPT_BEFORE)), None)
                if found:
                    out.append(f'{path.relative_to(pkg.parent)}:{lineno}: names simulator {backend!r} ({found!r}): '
                               f'{line.strip()[:100]}')
                    break
    return out

def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parent.parent
    pkg = Path(argv[0]) if argv else root / 'robobench'
    sys.path.insert(0, str(pkg.parent))
    found = hits(pkg)
    for line in found: print(line)
    print(f'simulator names outside their own files: {len(found)}' if found else
          'simulator names: only in their own files')
    return 1 if found else 0

if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
