#!/usr/bin/env python3
"""Render README.md from nbs/index.ipynb (markdown cells as they are, code cells as python blocks).
`--check` exits 1 when README.md is out of date. (nbdev_readme needs quarto, which robobench does not install.)"""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def render(nb_path=ROOT / 'nbs' / 'index.ipynb') -> str:
    nb = json.loads(Path(nb_path).read_text())
    parts = ['<!-- generated from nbs/index.ipynb by scripts/make_readme.py; edit the notebook -->']
    for c in nb['cells']:
        src = ''.join(c['source']).strip()
        if not src or src.startswith('#| hide'): continue
        parts.append(src if c['cell_type'] == 'markdown' else f'```python\n{src}\n```')
    return '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    text, readme = render(), ROOT / 'README.md'
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text() != text:
            print('README.md is out of date: run `python scripts/make_readme.py`'); sys.exit(1)
    else:
        readme.write_text(text)
