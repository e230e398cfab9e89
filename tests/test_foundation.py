"""Foundation: import cost, CLI, doctor (real checks on this machine), crash-safe writes, code hygiene."""
import ast, json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
HEAVY = ('torch', 'lerobot', 'mani_skill', 'sapien', 'robosuite', 'mujoco', 'tensorflow', 'tensorflow_datasets',
         'transformers', 'gymnasium', 'cv2', 'ray', 'wandb', 'matplotlib', 'ipywidgets', 'mediapy', 'papermill')


def test_import_is_light_and_fast():
    code = ("import time,sys; t=time.perf_counter(); import robobench, robobench.core, robobench.cli; "
            "dt=time.perf_counter()-t; print(dt); print(','.join(sorted({m.split('.')[0] for m in sys.modules})))")
    times = []
    for _ in range(3):
        out = subprocess.run([PY, '-c', code], capture_output=True, text=True, check=True).stdout.splitlines()
        times.append(float(out[0])); mods = set(out[1].split(','))
    assert not (mods & set(HEAVY)), f'heavy modules imported by `import robobench`: {mods & set(HEAVY)}'
    assert min(times) < 0.5, times


def test_no_heavy_imports_at_module_top():
    "Every exported module imports heavy libraries inside functions only (client machines need none of them)."
    bad = []
    for f in sorted((ROOT / 'robobench').rglob('*.py')):
        for node in ast.parse(f.read_text()).body:
            names = []
            if isinstance(node, ast.Import): names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0: names = [node.module]
            bad += [f'{f.name}: {n}' for n in names if n.split('.')[0] in HEAVY]
    assert not bad, bad


def _cli(*args, env=None, timeout=300):
    return subprocess.run([str(Path(PY).parent / 'robobench'), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_cli_help_and_unknown_verb():
    r = _cli('--help')
    assert r.returncode == 0 and 'doctor' in r.stdout and 'usage: robobench <verb>' in r.stdout
    r = _cli('doctr')
    assert r.returncode == 2 and "Did you mean 'doctor'" in r.stderr


@pytest.mark.slow
@pytest.mark.sim
def test_doctor_all_green_here():
    "make test set this machine up, so every required part must actually work."
    r = _cli('doctor', '--json')
    rep = json.loads(r.stdout)
    failed = [c for c in rep['checks'] if c['required'] and not c['ok']]
    assert r.returncode == 0 and rep['ok'], failed
    names = {c['name'] for c in rep['checks'] if c['ok']}
    assert {'ManiSkill3 starts (PickCube-v1, cpu)', 'robosuite starts (Lift, Panda)', 'ffmpeg'} <= names


@pytest.mark.slow
@pytest.mark.sim
def test_doctor_names_what_to_install(tmp_path):
    "Hide ffmpeg and every Vulkan driver: the doctor fails and says what to install for each."
    r = _cli('doctor', env={'PATH': str(tmp_path), 'VK_ICD_FILENAMES': str(tmp_path / 'none.json'),
                            'VK_DRIVER_FILES': str(tmp_path / 'none.json')})
    assert r.returncode == 1, r.stdout
    fixes = r.stdout.split('To fix:')[1]
    assert 'ffmpeg: apt-get update && apt-get install -y ffmpeg' in fixes
    assert 'Vulkan loader:' in fixes and 'mesa-vulkan-drivers' in fixes
    assert 'ManiSkill3 starts (PickCube-v1, cpu):' in fixes
    assert 'required part(s) missing' in r.stdout


WRITER = r'''
import sys, os
from robobench.core import atomic_write_json, append_jsonl
d = sys.argv[1]; i = 0
payload = 'x' * 200_000
while True:
    atomic_write_json(os.path.join(d, 'state.json'), {'i': i, 'payload': payload})
    append_jsonl(os.path.join(d, 'log.jsonl'), {'i': i, 'payload': payload[:5000]})
    i += 1
    if i == 5: print('running', flush=True)
'''


@pytest.mark.slow
@pytest.mark.parametrize('delay', [0.05, 0.21, 0.37])
def test_writes_survive_kill_9(tmp_path, delay):
    p = subprocess.Popen([PY, '-c', WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == 'running'
    time.sleep(delay)
    p.send_signal(signal.SIGKILL); p.wait()
    from robobench.core import read_json, read_jsonl, append_jsonl
    state = read_json(tmp_path / 'state.json')
    recs = read_jsonl(tmp_path / 'log.jsonl')
    assert [r['i'] for r in recs] == list(range(len(recs))), 'records lost or duplicated'
    assert state['i'] in (len(recs) - 1, len(recs)) and len(state['payload']) == 200_000
    # a writer resuming after the crash appends cleanly even if the last line was torn
    append_jsonl(tmp_path / 'log.jsonl', {'i': len(recs)})
    assert [r['i'] for r in read_jsonl(tmp_path / 'log.jsonl')] == list(range(len(recs) + 1))
    # a killed writer may leave its temp file behind, but never a partial file under the real name
    assert all(f.name.endswith('.tmp') for f in tmp_path.glob('.*'))


def test_notebook_hygiene():
    nbs = sorted((ROOT / 'nbs').rglob('*.ipynb'))
    assert nbs
    for nb in nbs:
        assert nb.stat().st_size < 300_000, f'{nb} is over 300 KB'
        outs = json.dumps([c.get('outputs', []) for c in json.loads(nb.read_text())['cells']])
        assert 'video/mp4' not in outs and 'data:video' not in outs and '<video' not in outs, \
            f'{nb} embeds a video in an output'
        assert len(outs) < 100_000, f'{nb} carries {len(outs)} bytes of outputs: keep documented outputs short'


def test_readme_is_rendered_from_index_notebook():
    r = subprocess.run([PY, str(ROOT / 'scripts' / 'make_readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    first_screen = (ROOT / 'README.md').read_text()[:2500]
    assert 'make test' in first_screen and 'robobench doctor' in first_screen and 'Python 3.12' in first_screen


def test_every_cli_verb_points_at_a_real_function():
    import importlib
    from robobench.cli import VERBS, available_verbs
    assert available_verbs() == VERBS
    for verb, (mod, fn, help_) in VERBS.items():
        assert callable(getattr(importlib.import_module(mod), fn)) and help_, verb
