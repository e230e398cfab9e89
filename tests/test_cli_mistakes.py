"""Expected mistakes on the command line (issues 25 and 26): exit code 2, ONE line on stderr that names the fix, no
traceback, and no run folder left behind by a command that failed before doing any work."""
import json, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from robobench.core import RobobenchError, free_port

ROBOBENCH = str(Path(sys.executable).parent / 'robobench')


def _cli(*args, timeout=180):
    return subprocess.run([ROBOBENCH, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def one_line(r, *needles) -> str:
    "The one stderr line of a refused command, checked: exit 2, no traceback, a fix, and each of `needles`."
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and 'Traceback' not in r.stderr, (r.returncode, r.stderr[-3000:])
    assert 'Fix:' in lines[0] or 'Did you mean' in lines[0], lines[0]
    for n in needles: assert n in lines[0], lines[0]
    return lines[0]


def test_eval_without_a_policy_names_both_options_instead_of_a_random_policy(tmp_path):
    r = _cli('eval', '-e', 'toy/Point', '--episodes', '1', '--no-video', '--run-folder', tmp_path / 'run')
    one_line(r, 'no policy to evaluate', '-m/--policy-server', '--policy.client', '--policy.client random')
    assert not (tmp_path / 'run').exists() and r.stdout == ''
    r = _cli('eval', '-e', 'toy/Point', '--policy.client', 'random', '--episodes', '1', '--no-video',
             '--run-folder', tmp_path / 'random')   # the random baseline, asked for explicitly
    assert r.returncode == 0 and (tmp_path / 'random' / 'summary.json').exists(), r.stderr[-2000:]


@pytest.mark.parametrize('args, needles', [
    (['--policy.clien', 'scripted'], ["unknown --policy option 'clien'", "Did you mean 'client'"]),
    (['--policy.client', 'random', '--policy.action_dimm', '2'],
     ["Did you mean 'action_dim'", 'Valid --policy options']),
    (['--policy.client', 'random', '--policy.n_action_steps', 'abc'],
     ["--policy.n_action_steps expects an int, got 'abc'", '--policy.n_action_steps 8']),
])
def test_policy_option_typos_and_bad_values(tmp_path, args, needles):
    r = _cli('eval', '-e', 'toy/Point', *args, '--episodes', '1', '--no-video', '--run-folder', tmp_path / 'run')
    one_line(r, *needles)
    assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('args, flag', [
    (['eval', '-e', 'toy/Point', '--policy.client', 'random', '--episodes', '0'], '--episodes'),
    (['eval', '-e', 'toy/Point', '--policy.client', 'random', '--episodes', '-1'], '--episodes'),
    (['eval', '-e', 'toy/Point', '--policy.client', 'random', '--max-steps', '-5'], '--max-steps'),
    (['collect', '--env', 'toy/Point', '--out', 'OUT', '--episodes', '0'], '--episodes'),
    (['collect', '--env', 'toy/Point', '--out', 'OUT', '--max-attempts', '-1'], '--max-attempts'),
    (['train', '--repo-ids', 'x', '--training-steps', '0'], '--training-steps'),
    (['train', '--repo-ids', 'x', '--batch-size', '-2'], '--batch-size'),
    (['train', '--repo-ids', 'x', '--max-steps', '-5'], '--max-steps'),
])
def test_counts_and_step_limits_must_be_positive(tmp_path, args, flag):
    args = [str(tmp_path / 'out') if a == 'OUT' else a for a in args]
    one_line(_cli(*args, '--run-folder', tmp_path / 'run') if args[0] == 'eval' else _cli(*args),
             f'argument {flag}', 'must be a positive integer', '--help')
    assert not (tmp_path / 'run').exists() and not (tmp_path / 'out').exists()


@pytest.mark.parametrize('args, needles', [
    (['eval', '-e', 'toy/Point', '--episodes', 'x'], ["invalid int value: 'x'", '`robobench eval --help`']),
    (['serve', '--policy', 'scriptd'], ["invalid choice: 'scriptd'", '`robobench serve --help`']),
    (['doctor', '--bogus'], ['unrecognized arguments: --bogus', '`robobench doctor --help`']),
    (['inspect'], ['required: path', '`robobench inspect --help`']),
])
def test_argparse_errors_are_one_line_with_the_help_hint(args, needles):
    r = _cli(*args)
    one_line(r, *needles)
    assert 'usage:' not in r.stderr and r.stdout == ''


def test_no_server_at_the_address_says_how_to_start_one(tmp_path):
    port = free_port()   # nothing listens there
    for workers in ('1', '2'):
        r = _cli('eval', '-e', 'toy/Point', '-m', f'127.0.0.1:{port}', '--episodes', '2', '--workers', workers,
                 '--no-video', '--run-folder', tmp_path / f'run{workers}')
        one_line(r, f'no policy server answers at 127.0.0.1:{port}', f'robobench serve -m CHECKPOINT_DIR --port {port}')
        assert not (tmp_path / f'run{workers}').exists()


def test_serve_unknown_env_and_collect_unknown_expert(tmp_path):
    one_line(_cli('serve', '--policy', 'scripted', '--env', 'maniskill/PickCub-v1', '--port', '0'),
             "unknown ManiSkill env 'PickCub-v1'", "Did you mean 'PickCube-v1'")
    one_line(_cli('serve', '--policy', 'scripted', '--port', '0'), '--policy scripted needs --env ENV')
    r = _cli('collect', '--env', 'pusht/PushT', '--out', tmp_path / 'ds', '--episodes', '1')
    one_line(r, "unknown expert 'pusht/PushT'", 'Valid experts')
    assert r.stdout == '' and not (tmp_path / 'ds').exists()


def test_a_run_folder_of_another_evaluation_is_refused(tmp_path):
    base = ['eval', '-e', 'toy/Point', '--policy.client', 'random', '--episodes', '1', '--no-video',
            '--run-folder', tmp_path / 'run']
    assert _cli(*base, '--max-steps', '3').returncode == 0
    one_line(_cli(*base, '--max-steps', '4'), 'holds a different evaluation', 'use another --run-folder')
    assert (tmp_path / 'run' / 'episodes.jsonl').exists()   # the first evaluation is kept


def _tiny_checkpoint(d: Path, state_file: str) -> Path:
    "A checkpoint dir that passes every check up to the processor files (nothing in it is ever loaded)."
    from safetensors.numpy import save_file
    d.mkdir(parents=True)
    (d / 'config.json').write_text(json.dumps({'type': 'act'}))
    steps = lambda *s: json.dumps({'name': 'p', 'steps': list(s)})
    (d / 'policy_preprocessor.json').write_text(steps({'registry_name': 'normalizer_processor', 'config': {},
                                                       'state_file': state_file}))
    (d / 'policy_postprocessor.json').write_text(steps({'registry_name': 'unnormalizer_processor', 'config': {}}))
    save_file({'w': np.zeros(4, np.float32)}, str(d / 'model.safetensors'))
    return d


def test_a_state_file_linked_out_of_the_checkpoint_is_refused(tmp_path):
    from safetensors.numpy import save_file
    secret = tmp_path / 'elsewhere' / 'stats.safetensors'; secret.parent.mkdir()
    save_file({'mean': np.zeros(2, np.float32)}, str(secret))
    ckpt = _tiny_checkpoint(tmp_path / 'ckpt', 'stats.safetensors')
    (ckpt / 'stats.safetensors').symlink_to(secret)
    from robobench.checkpoints import check_checkpoint
    for trust in (False, True):   # trusting the checkpoint's code does not let it read files outside its dir
        with pytest.raises(RobobenchError, match="names state_file 'stats.safetensors', which resolves outside"):
            check_checkpoint(ckpt, trust_remote_code=trust)
    for name in ('../elsewhere/stats.safetensors', str(secret)):
        with pytest.raises(RobobenchError, match='resolves outside the checkpoint dir'):
            check_checkpoint(_tiny_checkpoint(tmp_path / f'c{len(name)}', name), trust_remote_code=True)
    r = _cli('eval', '-e', 'toy/Point', '-m', ckpt, '--episodes', '1', '--no-video', '--run-folder', tmp_path / 'run')
    one_line(r, 'resolves outside the checkpoint dir', str(ckpt))
    assert not (tmp_path / 'run').exists()


def test_cuda_asked_for_without_a_gpu():
    torch = pytest.importorskip('torch')
    if torch.cuda.is_available(): pytest.skip('this machine has a CUDA device')
    from robobench.core import pick_device
    with pytest.raises(RobobenchError, match='no CUDA device here') as e:
        pick_device('cuda')
    assert 'use --device cpu' in str(e.value)


def test_an_env_option_the_simulator_refuses_is_named(tmp_path):
    r = _cli('eval', '-e', 'toy/Point', '--policy.client', 'random', '--env-kwargs', '{"control_mode": "bogus"}',
             '--episodes', '1', '--no-video', '--run-folder', tmp_path / 'run')
    one_line(r, "toy/Point refused control_mode='bogus'", "unexpected keyword argument 'control_mode'", '--env-kwargs')
    assert not (tmp_path / 'run').exists()


def test_train_resume_with_nothing_to_resume(tmp_path):
    for out in (tmp_path / 'missing', tmp_path / 'empty'):
        if out.name == 'empty': out.mkdir()
        r = _cli('train', '--repo-ids', 'x', '--root', tmp_path, '--output-dir', out, '--resume', '--device', 'cpu')
        one_line(r, f'nothing to resume: {out}', 'drop --resume')
