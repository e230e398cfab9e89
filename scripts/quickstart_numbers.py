#!/usr/bin/env python3
"""Write a quickstart run's measured numbers into the README: the paragraph between `<!-- quickstart-numbers -->`
and `<!-- /quickstart-numbers -->` in nbs/index.ipynb is regenerated from the run folder's `metrics.json` and
`status.json`, then README.md is rendered (scripts/make_readme.py).

    .venv/bin/robobench run quickstart --name demo        # (what `make demo` runs) prints the run folder
    .venv/bin/python scripts/quickstart_numbers.py papermill_runs/quickstart/<date>/<time>_demo
"""
import json, math, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = '<!-- quickstart-numbers -->', '<!-- /quickstart-numbers -->'


def minutes(s: float) -> str:
    m, s = divmod(int(round(s)), 60)
    return f'{m} min {s} s' if m else f'{s} s'


def paragraph(run: Path) -> str:
    m, st = json.loads((run / 'metrics.json').read_text()), json.loads((run / 'status.json').read_text())
    if st.get('status') != 'done': raise SystemExit(f'{run}: status is {st.get("status")!r}, not a finished run')
    import yaml
    p = yaml.safe_load((run / 'params.yaml').read_text()) or {}
    t, act, n = m['timings_s'], m['eval']['ACT (trained)'], m['episodes']
    exp = m['eval']['scripted expert']
    lo, hi = (math.floor(100 * m['wilson_95'][0] + 0.5), math.floor(100 * m['wilson_95'][1] + 0.5))
    workers = p.get('WORKERS', 1)
    return (f'Measured on a 2-core CPU machine (after set-up; episodes independent of each other, see "Numbers you can '
            f'believe"), from the run `scripts/quickstart_numbers.py` reads: **{minutes(st["seconds"])} end to end** '
            f'— collection {t["collect_s"]:.0f} s, training {t["train_s"]:.0f} s, serving and both evaluations '
            f'{t["serve_and_eval_s"]:.0f} s ({workers} worker processes); ACT (no VAE, {m["train_steps"]} steps, '
            f'temporal ensembling: a new chunk every step) succeeds on **{act["successes"]}/{n} held-out seeds = '
            f'{round(100 * m["success_rate"])}% [{lo}%, {hi}%]**, the scripted expert on {exp["successes"]}/'
            f'{exp["episodes"]}. On another machine expect the same demos and evaluation seeds, but training may round '
            f'differently, so a success count a few seeds apart is normal.')


def main(argv):
    if len(argv) != 1: raise SystemExit(__doc__)
    text = paragraph(Path(argv[0]))
    nb_path = ROOT / 'nbs' / 'index.ipynb'
    nb = json.loads(nb_path.read_text())
    pat = re.compile(re.escape(BEGIN) + r'.*?' + re.escape(END), re.S)
    hits = [c for c in nb['cells'] if c['cell_type'] == 'markdown' and pat.search(''.join(c['source']))]
    if len(hits) != 1: raise SystemExit(f'nbs/index.ipynb needs exactly one {BEGIN} ... {END} block')
    src = pat.sub(lambda _: f'{BEGIN}\n{text}\n{END}', ''.join(hits[0]['source']))
    hits[0]['source'] = src.splitlines(keepends=True)
    nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
    subprocess.run([sys.executable, str(ROOT / 'scripts' / 'make_readme.py')], check=True)
    print(text)


if __name__ == '__main__':
    main(sys.argv[1:])
