#!/usr/bin/env python3
"""ruff over the package, tests, benchmarks and scripts (rules and line length in pyproject.toml).

One allowance: nbdev writes `__all__ = [...]` wrapped at 120 columns *before* prefixing `__all__ = `, so the first
line of a generated `__all__` may reach 130; that line alone is not reported."""
import json, subprocess, sys
from pathlib import Path

PATHS = ['robobench', 'tests', 'benchmarks', 'scripts']

def main() -> int:
    root = Path(__file__).resolve().parent.parent
    ruff = Path(sys.executable).parent / 'ruff'
    found = []
    for args in (PATHS,   # the configured rules (generated modules skip E501 there) ...
                 ['--isolated', '--line-length', '120', '--select', 'E501', '--extend-exclude', 'robobench/_modidx.py',
                  'robobench']):   # ... checked here
        out = subprocess.run([str(ruff), 'check', '--output-format', 'json', *args], cwd=root,
                             capture_output=True, text=True)
        if out.returncode not in (0, 1): print(out.stderr, file=sys.stderr); return out.returncode
        found += json.loads(out.stdout or '[]')
    problems = []
    for p in found:
        line = (root / p['filename']).read_text().splitlines()[p['location']['row'] - 1]
        if p['code'] == 'E501' and line.startswith('__all__ = [') and len(line) <= 130: continue
        problems.append(p)
    for p in problems:
        rel = Path(p['filename']).resolve().relative_to(root)
        print(f"{rel}:{p['location']['row']}:{p['location']['column']}: {p['code']} {p['message']}")
    print(f'ruff: {len(problems)} problem(s)' if problems else 'ruff: all checks passed')
    return 1 if problems else 0

if __name__ == '__main__':
    sys.exit(main())
