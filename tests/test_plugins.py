"""Plugins by entry point: a simulator written in one file outside the package, registered only through the
`robobench.backends` entry point of an installed distribution (a `.dist-info` folder on the path), runs with
`robobench eval`; a bare factory works too; a plugin that fails to import is one line naming its distribution."""
import json, os, re, subprocess, sys
from pathlib import Path
import pytest

ROBOBENCH = str(Path(sys.executable).parent / 'robobench')

# the README's example simulator, exactly as the README shows it (one file, nothing in robobench edited) ...
_README = (Path(__file__).resolve().parent.parent / 'README.md').read_text()
MYSIM = re.search(r"```python\n(# mysim\.py\n.*?)```", _README, re.S).group(1) + '''
def make_bare(task, **kwargs):   # ... plus a bare factory: (task, **kwargs) -> RobobenchEnv
    env = ReachEnv(task, **kwargs)
    env.spec.env_id, env.spec.backend = f'bare/{task}', 'bare'
    return env
'''

PLUGINS = '''
import numpy as np
from robobench.clients import InferenceClient

class Greedy(InferenceClient):
    "Steps straight at the goal (a privileged client: it reads env_state)."
    def __init__(self, **kwargs): pass
    def infer(self, obs, instruction, return_viz=False):
        return np.clip((obs['env_state'] - obs['state']) / 0.1, -1, 1).astype(np.float32), None
    def reset(self): pass

LAYOUT = {'doc': 'the prompt alone, under "text"', 'prompt': 'text'}
'''

def install(site: Path, name: str, entry_points: str, files: dict) -> dict:
    "Lay out an installed distribution (what pip writes) under `site`; return an env whose PYTHONPATH holds it."
    for fname, text in files.items(): (site / fname).write_text(text)
    info = site / f'{name.replace("-", "_")}-0.1.dist-info'
    info.mkdir(parents=True)
    (info / 'METADATA').write_text(f'Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n')
    (info / 'entry_points.txt').write_text(entry_points)
    return {**os.environ, 'PYTHONPATH': os.pathsep.join([str(site), os.environ.get('PYTHONPATH', '')])}

@pytest.fixture
def plugin(tmp_path):
    site = tmp_path / 'site'; site.mkdir()
    return install(site, 'mysim', '[robobench.backends]\nmysim = mysim:BACKEND\nbare = mysim:make_bare\n'
                                  'broken = mysim_missing:BACKEND\n[robobench.clients]\ngreedy = myplugins:Greedy\n'
                                  '[robobench.layouts]\nprompt-only = myplugins:LAYOUT\n',
                   {'mysim.py': MYSIM, 'myplugins.py': PLUGINS})

def run(args, env, timeout=300):
    return subprocess.run([ROBOBENCH, *args], capture_output=True, text=True, timeout=timeout, env=env)

def test_a_plugin_simulator_runs_with_robobench_eval(plugin, tmp_path):
    r = run(['eval', '--environment', 'mysim/Reach', '--policy.client', 'random', '--episodes', '3',
             '--run-folder', str(tmp_path / 'run'), '--no-video'], plugin)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    lines = [json.loads(line) for line in (tmp_path / 'run' / 'episodes.jsonl').read_text().splitlines()]
    assert sorted(ep['seed'] for ep in lines) == [0, 1, 2] and all(ep['outcome'] != 'error' for ep in lines)
    assert all(ep['length'] == 40 for ep in lines if not ep['success'])          # the Task's max_steps
    info = json.loads((tmp_path / 'run' / 'run_info.json').read_text())
    assert info['env'] == 'mysim/Reach'

def test_a_bare_factory_plugin_and_the_registry_listing(plugin, tmp_path):
    r = run(['eval', '--environment', 'bare/Anything', '--policy.client', 'random', '--episodes', '1',
             '--max-steps', '5', '--run-folder', str(tmp_path / 'run'), '--no-video'], plugin)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    code = ('from robobench.envs import BACKENDS, list_envs, make_env; print(sorted(BACKENDS.names())); '
            'print(list_envs()); print(make_env("mysim/Reach").spec.instruction)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=plugin, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    names, envs, instruction = out.stdout.splitlines()[-3:]
    assert {'mysim', 'bare', 'broken', 'toy'} <= set(eval(names)) and 'mysim/Reach' in eval(envs)
    assert instruction == 'reach the goal'

def test_a_broken_plugin_is_one_line_naming_its_distribution(plugin, tmp_path):
    r = run(['eval', '--environment', 'broken/Reach', '--policy.client', 'random', '--episodes', '1',
             '--run-folder', str(tmp_path / 'run'), '--no-video'], plugin)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    err = (r.stderr + r.stdout).strip().splitlines()
    assert len(err) == 1 and "'mysim'" in err[0] and 'failed to load' in err[0] and 'Fix:' in err[0], err
    r = run(['eval', '--environment', 'mysimm/Reach', '--policy.client', 'random', '--episodes', '1',
             '--run-folder', str(tmp_path / 'run2'), '--no-video'], plugin)
    assert r.returncode == 2 and "Did you mean 'mysim'" in r.stderr + r.stdout, r.stderr[-2000:]

def test_doctor_lists_plugins(plugin):
    r = run(['doctor', '--quick', '--json'], plugin)
    checks = {c['name']: c for c in json.loads(r.stdout)['checks']}
    assert checks['plugin env backend mysim']['ok'] and 'mysim:BACKEND' in checks['plugin env backend mysim']['detail']
    broken = checks['plugin env backend broken']
    assert not broken['ok'] and not broken['required'] and "'mysim'" in broken['detail']

def test_client_and_layout_plugins(plugin, tmp_path):
    "`--policy.client NAME` finds a client an installed package declares; `get_layout` finds its layouts."
    r = run(['eval', '--environment', 'mysim/Reach', '--policy.client', 'greedy', '--episodes', '2',
             '--run-folder', str(tmp_path / 'run'), '--no-video'], plugin)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    lines = [json.loads(line) for line in (tmp_path / 'run' / 'episodes.jsonl').read_text().splitlines()]
    assert [ep['success'] for ep in lines] == [True, True]
    code = ('from robobench.layouts import LAYOUTS, get_layout; '
            'print(get_layout("prompt-only")["prompt"], LAYOUTS.names())')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=plugin, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith('text ') and 'openpi-libero' in out.stdout, out.stderr

def test_sim_names_check_fails_when_a_module_names_a_simulator(tmp_path):
    "`scripts/sim_names.py` (run by `make nbcheck`) passes on the package and fails when a shared module names one."
    import shutil
    root = Path(__file__).resolve().parent.parent
    script = root / 'scripts' / 'sim_names.py'
    ok = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    pkg = tmp_path / 'robobench'
    shutil.copytree(root / 'robobench', pkg, ignore=shutil.ignore_patterns('__pycache__'))
    with open(pkg / 'evaluation.py', 'a') as f: f.write("\nDEFAULT_ENV = 'robosuite/Lift'\n")
    bad = subprocess.run([sys.executable, str(script), str(pkg)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and 'evaluation.py' in bad.stdout and "'robosuite'" in bad.stdout, bad.stdout[-2000:]
