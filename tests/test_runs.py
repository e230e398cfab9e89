"""Papermill templates executed for real (real kernel, real envs), parameter validation, sweeps with skip/retry,
the CLI."""
import json, subprocess, sys
from pathlib import Path
import pytest
import yaml
from robobench.core import read_json, read_jsonl
from robobench.runs import (RunResult, cli_run, cli_sweep, kernel_python, default_kernel, list_templates, run,
                            sweep, template_parameters, template_path, validate_params)

ROBOBENCH = str(Path(sys.executable).parent / 'robobench')
TOY = {'ENV': 'toy/Point', 'EPISODES': 4, 'SHOW_VIDEOS': 1}


def outputs_size(nb_path) -> int:
    nb = json.loads(Path(nb_path).read_text())
    return sum(len(json.dumps(c.get('outputs', []))) for c in nb['cells'])


def test_templates_follow_the_conventions():
    names = set(list_templates())
    assert {'evaluate', 'collect', 'inspect_dataset', 'compare'} <= names
    for t in names:
        nb = json.loads(template_path(t).read_text())
        code = [c for c in nb['cells'] if c['cell_type'] == 'code']
        assert nb['cells'][0]['cell_type'] == 'markdown' and nb['cells'][0]['source'][0].startswith('# ')
        assert 'parameters' in code[0]['metadata'].get('tags', []), t
        ps = template_parameters(t)
        assert {'RUN_DIR', 'SEED'} <= set(ps) and ps['RUN_DIR']['default'] is None
        for n, p in ps.items():
            assert n.isupper() and p['comment'], (t, n)
            json.dumps(p['default'])
        src = '\n'.join(''.join(c['source']) for c in code)
        imports = [line.split()[1] for line in src.splitlines() if line.startswith(('import ', 'from '))]
        # robobench only (the standard library's clock aside: the quickstart records its phases' wall times)
        assert all(m in ('robobench', 'time') or m.startswith('robobench.') for m in imports), (t, imports)
        assert not any(c.get('outputs') for c in code), f'{t} has committed outputs'


@pytest.fixture(scope='module')
def evals(tmp_path_factory):
    "Two evaluate runs on the pure-numpy toy env: the scripted expert and the random client, same seeds."
    root = tmp_path_factory.mktemp('runs')
    a = run('evaluate', {**TOY, 'CLIENT': 'scripted'}, name='scripted', root=root)
    b = run('evaluate', {**TOY, 'CLIENT': 'random'}, name='random', root=root)
    return root, a, b


def test_evaluate_template(evals):
    root, a, b = evals
    for r in (a, b):
        assert r.status == 'done', r.error
        d = r.run_dir
        assert d.parent.parent == root / 'evaluate' and d.name.endswith(('_scripted', '_random'))
        for f in ('params.yaml', 'run_info.json', 'status.json', 'metrics.json', 'episodes.jsonl', 'evaluate.ipynb'):
            assert (d / f).exists(), f
        assert len(list((d / 'videos').glob('*.mp4'))) == 4
        assert outputs_size(r.notebook) < 300_000        # one inline video + a plot + a table
        p = yaml.safe_load((d / 'params.yaml').read_text())
        assert p['ENV'] == 'toy/Point' and p['EPISODES'] == 4 and 'RUN_DIR' not in p
        st = read_json(d / 'status.json')
        assert st['status'] == 'done' and st['attempts'] == 1 and st['seconds'] > 0
        info = read_json(d / 'run_info.json')
        assert info['papermill']['template'] == 'evaluate' and info['papermill']['identity'] == r.identity
        assert info['papermill']['kernel_python'] == sys.executable     # the venv's interpreter runs the kernel
        nb = json.loads(r.notebook.read_text())
        assert 'success_rate' in json.dumps(nb['cells'])                 # the success table was rendered
        import nbformat
        # signed for this user: JupyterLab renders its videos, no `jupyter trust`
        from nbformat.sign import NotebookNotary
        assert st['signed'] and NotebookNotary().check_signature(nbformat.read(str(r.notebook), as_version=4))
    assert a.metrics['episodes'] == 4 and a.metrics['successes'] == 4 and a.metrics['client'] == 'scripted'
    assert b.metrics['successes'] == 0 and b.metrics['wilson_95'][0] == 0 and b.metrics['wilson_95'][1] > 0.4
    assert RunResult.load(a.run_dir).metrics == a.metrics


def test_compare_template(evals):
    root, a, b = evals
    r = run('compare', {'RUNS': [str(a.run_dir), str(b.run_dir)], 'LABELS': ['expert', 'random']}, root=root)
    assert r.status == 'done', r.error
    m = r.metrics
    assert m['runs']['expert']['success_rate'] == 1.0 and m['runs']['random']['success_rate'] == 0.0
    (p,) = m['pairs']
    assert (p['a'], p['b'], p['shared_seeds'], p['only_a'], p['only_b']) == ('expert', 'random', 4, 4, 0)
    assert p['mcnemar_p'] == pytest.approx(0.125)        # exact two-sided binomial, 4 discordant pairs


def test_collect_then_inspect(tmp_path):
    c = run('collect', {'ENV': 'toy/Point', 'EPISODES': 3}, root=tmp_path)
    assert c.status == 'done', c.error
    m = c.metrics
    assert m['episodes'] == 3 and m['saved_success'] == 3 and m['complete'] and m['frames'] > 3
    assert Path(m['dataset']) == c.run_dir / 'dataset' and (c.run_dir / 'dataset' / 'meta' / 'info.json').exists()
    i = run('inspect_dataset', {'DATASET': m['dataset']}, root=tmp_path)
    assert i.status == 'done', i.error
    assert (i.metrics['episodes'], i.metrics['frames']) == (3, m['frames'])
    assert i.metrics['check_errors'] == 0 and i.metrics['format'] == 'lerobot' and i.metrics['success_rate'] == 1.0
    assert set(i.metrics['stats']) >= {'observation.state', 'action'}


@pytest.mark.sim
def test_evaluate_template_on_maniskill(tmp_path):
    r = run('evaluate', {'ENV': 'maniskill/PickCube-v1', 'CLIENT': 'scripted', 'EPISODES': 3, 'START_SEED': 100,
                         'SHOW_VIDEOS': 1}, root=tmp_path, name='pickcube')
    assert r.status == 'done', r.error
    assert r.metrics['episodes'] == 3 and r.metrics['successes'] >= 2, r.metrics
    assert len(list((r.run_dir / 'videos').glob('*.mp4'))) == 3
    assert outputs_size(r.notebook) < 500_000


def test_parameter_validation(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"Did you mean 'EPISODES'.*Valid parameters: BACKEND, CHECKPOINT"):
        validate_params('evaluate', {'EPISODE': 3})
    with pytest.raises(ValueError, match='EPISODES expects an int'):
        run('evaluate', {'EPISODES': 'lots'}, root=tmp_path)
    with pytest.raises(KeyError, match="Did you mean 'evaluate'"):
        run('evalute', root=tmp_path)
    assert not (tmp_path / 'evaluate').exists()             # nothing was created for invalid input
    assert validate_params('evaluate', {'EPISODES': '7', 'VIDEO': 'no', 'CLIENT': '8000', 'ENV_KWARGS': '{a: 1}'}) == \
        {'EPISODES': 7, 'VIDEO': False, 'CLIENT': '8000', 'ENV_KWARGS': {'a': 1}}
    assert cli_run(['evaluate', '-p', 'EPISODEZ', '3', '--root', str(tmp_path)]) == 2
    assert "Did you mean 'EPISODES'" in capsys.readouterr().err
    pf = tmp_path / 'p.yaml'; pf.write_text('ENV: toy/Point\nWORKER: 2\n')
    assert cli_run(['evaluate', '-f', str(pf), '--root', str(tmp_path)]) == 2
    assert "Did you mean 'WORKERS'" in capsys.readouterr().err


def test_cli_help_params_and_list():
    out = subprocess.run([ROBOBENCH, 'run', 'evaluate', '--help-params'], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert 'EPISODES' in out.stdout and 'number of episodes' in out.stdout and 'RUN_DIR' in out.stdout
    out = subprocess.run([ROBOBENCH, 'run', '--list'], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and 'inspect_dataset' in out.stdout


def test_cli_run_prints_run_dir_and_fails_with_the_error(tmp_path, capsys):
    args = ['evaluate', '-p', 'ENV', 'toy/Point', '-p', 'EPISODES', '2', '-p', 'VIDEO', 'false',
            '--root', str(tmp_path)]
    assert cli_run(args + ['--name', 'ok']) == 0
    d = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert d.name.endswith('_ok') and read_json(d / 'metrics.json')['episodes'] == 2
    assert cli_run(args + ['-p', 'CLIENT', 'no_such_client', '--name', 'bad']) == 2   # a bad parameter value: exit 2
    cap = capsys.readouterr()
    assert "In [4]: 'no_such_client' is not a host:port" in cap.err and 'Traceback' not in cap.err
    d = Path(cap.out.strip().splitlines()[-1])
    st = read_json(d / 'status.json')
    assert (st['status'] == 'failed' and st['error']['ename'] == 'ClientSpecError'
            and 'no_such_client' in st['error']['traceback'])
    assert (d / 'evaluate.ipynb').exists()                  # the executed notebook shows the failing cell


def test_sweep_skips_completed_and_retries_failed(tmp_path, capsys):
    spec = tmp_path / 'clients.yaml'
    spec.write_text(yaml.safe_dump({'template': 'evaluate',
                                    'params': {'ENV': 'toy/Point', 'EPISODES': 2, 'VIDEO': False},
                                    'grid': {'CLIENT': ['scripted', 'random', 'no_such_client']}}))
    root = tmp_path / 'runs'
    df = sweep(spec, root=root, progress=False)
    assert list(df.status) == ['done', 'done', 'failed'] and list(df.CLIENT) == ['scripted', 'random', 'no_such_client']
    assert list(df.success_rate[:2]) == [1.0, 0.0] and 'no_such_client' in df.error[2]
    csv = root / 'sweeps' / 'clients' / 'summary.csv'
    assert (Path(df.attrs['summary_csv']) == csv and csv.exists()
            and (root / 'sweeps' / 'clients' / 'sweep.yaml').exists())
    nbs = [Path(d) / 'evaluate.ipynb' for d in df.run_dir]
    mtimes = [p.stat().st_mtime_ns for p in nbs]

    assert cli_sweep([str(spec), '--root', str(root), '--dry-run']) == 0
    out = capsys.readouterr().out
    assert out.count('skip (done)') == 2 and out.count('retry') == 1

    df2 = sweep(spec, root=root, progress=False)
    assert list(df2.skipped) == [True, True, False] and list(df2.attempts) == [1, 1, 2]
    assert list(df2.run_dir) == list(df.run_dir)            # same run dirs: the failed one was retried in place
    assert [p.stat().st_mtime_ns for p in nbs[:2]] == mtimes[:2] and nbs[2].stat().st_mtime_ns > mtimes[2]
    st = read_json(Path(df2.run_dir[2]) / 'status.json')
    assert st['status'] == 'failed' and st['attempts'] == 2 and st['history'][0]['status'] == 'failed'
    import pandas as pd
    back = pd.read_csv(csv)
    assert len(back) == 3 and list(back.status) == ['done', 'done', 'failed']
    assert cli_sweep([str(spec), '--root', str(root)]) == 1      # still one failure -> exit 1


def test_kernel_is_this_venv():
    assert kernel_python('python3') == sys.executable
    k = default_kernel()
    assert Path(kernel_python(k)).parent.resolve() == Path(sys.executable).parent.resolve()


def test_same_params_reproduce_outcomes(evals):
    "The same template + params + seeds gives the same episodes (the random client is seeded from SEED)."
    root, a, b = evals
    again = run('evaluate', {**TOY, 'CLIENT': 'random', 'VIDEO': False}, name='random_again', root=root)
    key = lambda d: [(r['seed'], r['success'], r['length'], round(r['return'], 6))
                     for r in sorted(read_jsonl(d / 'episodes.jsonl'), key=lambda r: r['seed'])]
    assert again.status == 'done' and key(again.run_dir) == key(b.run_dir)
    assert again.run_dir != b.run_dir and again.identity != b.identity      # VIDEO differs: another identity


@pytest.mark.slow
def test_sweep_on_a_local_ray_instance(tmp_path):
    pytest.importorskip('ray', reason='ray is the optional group (requirements-ray.txt)')
    spec = {'template': 'evaluate', 'name': 'ray', 'params': {'ENV': 'toy/Point', 'EPISODES': 2, 'VIDEO': False},
            'grid': {'CLIENT': ['scripted', 'random']}}
    import ray
    try:
        df = sweep(spec, root=tmp_path, backend='ray', max_parallel=2, progress=False)
    finally:
        ray.shutdown()
    assert list(df.status) == ['done', 'done'] and list(df.success_rate) == [1.0, 0.0]
    df2 = sweep(spec, root=tmp_path, progress=False)          # the local backend sees the Ray runs as completed
    assert list(df2.skipped) == [True, True] and list(df2.run_dir) == list(df.run_dir)
