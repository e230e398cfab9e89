"""Expected mistakes on the command line (issues 25 and 26): exit code 2, ONE line on stderr that names the fix, no
traceback, and no run folder left behind by a command that failed before doing any work."""
import json, re, subprocess, sys
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


@pytest.fixture(scope='module')
def point_data(tmp_path_factory):
    "A tiny toy/Point LeRobot dataset (3 scripted episodes) under `root/point`."
    from robobench.collect import collect
    root = tmp_path_factory.mktemp('data')
    collect('toy/Point', 3, root / 'point', cameras=[], progress=False)
    return root


def _damage(root: Path, name: str, how: str) -> Path:
    """A copy of the point dataset named `name` whose data parquet file is truncated, garbled in its middle, or
    garbled in its first data page only (`pages`: the footer stays intact)."""
    import shutil
    import pyarrow.parquet as pyarrow_pq
    d = root / name
    if not d.exists(): shutil.copytree(root / 'point', d)
    pq = next((d / 'data').glob('*/*.parquet'))
    b = bytearray(pq.read_bytes())
    if how == 'truncate': b = b[:len(b) // 2]
    elif how == 'pages':
        at = pyarrow_pq.read_metadata(pq).row_group(0).column(0).data_page_offset
        b[at:at + 40] = bytes((x * 7 + 13) % 256 for x in b[at:at + 40])
    else: b[len(b) // 4:len(b) // 2] = bytes((x * 7 + 13) % 256 for x in b[len(b) // 4:len(b) // 2])
    pq.write_bytes(bytes(b))
    return d


def test_a_damaged_parquet_file_is_named_by_inspect_and_train(point_data, tmp_path):
    for how in ('truncate', 'garble', 'pages'):
        d = _damage(point_data, f'damaged_{how}', how)
        one_line(_cli('inspect', '--check', d), f'dataset {d} is damaged', 'data/chunk-000/file-000.parquet',
                 'download or copy the dataset again')
    r = _cli('train', '--repo-ids', 'damaged_truncate', '--root', point_data, '--training-steps', '2',
             '--device', 'cpu', '--output-dir', tmp_path / 'out')
    one_line(r, 'damaged_truncate is damaged', 'file-000.parquet', 'download or copy the dataset again')
    assert not (tmp_path / 'out').exists()   # refused before the output dir was made
    r = _cli('train', '--repo-ids', 'damaged_pages', '--root', point_data, '--training-steps', '2',
             '--device', 'cpu', '--output-dir', tmp_path / 'out')   # garbled pages behind an intact footer
    one_line(r, 'damaged_pages is damaged', 'file-000.parquet', 'download or copy the dataset again')
    assert not (tmp_path / 'out').exists()


def test_a_huge_policy_size_is_refused_before_allocating(point_data, tmp_path):
    for dim in (10**9, 10**5):   # more than PyTorch can address; ~150 GiB (refused from the dim_model floor alone)
        r = _cli('train', '--repo-ids', 'point', '--root', point_data, '--training-steps', '2', '--device', 'cpu',
                 '--output-dir', tmp_path / 'out', '--policy.dim_model', dim)
        one_line(r, f'--policy.dim_model {dim} needs', 'choose smaller values for --policy.dim_model')
        assert not (tmp_path / 'out').exists() and 'caching' not in r.stderr


def test_an_offline_hub_id_for_pretrained_path_names_the_download(point_data, tmp_path):
    import os
    env = {**os.environ, 'HF_HUB_OFFLINE': '1'}
    r = subprocess.run([ROBOBENCH, 'train', '--repo-ids', 'point', '--root', str(point_data), '--device', 'cpu',
                        '--pretrained-path', 'lerobot/pi0', '--output-dir', str(tmp_path / 'out')],
                       capture_output=True, text=True, timeout=180, env=env)
    one_line(r, "--pretrained-path 'lerobot/pi0' is not a local checkpoint dir", 'HF_HUB_OFFLINE',
             '`huggingface-cli download lerobot/pi0`', 'pass --pretrained-path a local checkpoint dir')
    assert not (tmp_path / 'out').exists()


def _lying_header(ckpt: Path, **change) -> Path:
    "Rewrite `ckpt`'s model.safetensors header with `change` applied to its first tensor (the data bytes unchanged)."
    p = ckpt / 'model.safetensors'
    b = p.read_bytes(); n = int.from_bytes(b[:8], 'little')
    hdr = json.loads(b[8:8 + n])
    first = next(k for k in hdr if k != '__metadata__')
    hdr[first].update(change)
    h = json.dumps(hdr).encode()
    p.write_bytes(len(h).to_bytes(8, 'little') + h + b[8 + n:])
    return p


def test_a_safetensors_header_that_lies_about_sizes_is_refused_before_loading(point_data, tmp_path):
    import shutil
    from tests._tiny_act import make_tiny_act
    from robobench.checkpoints import check_checkpoint
    good = make_tiny_act(tmp_path / 'good')
    check_checkpoint(good)
    cases = {'shape': ({'shape': [10**6, 10**6]}, 'claims shape [1000000, 1000000] F32'),
             'offsets': ({'data_offsets': [0, 10**12]}, 'in 1000000000000 bytes of data'),
             'dtype': ({'dtype': 'F128'}, 'unknown dtype')}
    for name, (change, needle) in cases.items():
        ckpt = tmp_path / name; shutil.copytree(good, ckpt)
        _lying_header(ckpt, **change)
        with pytest.raises(RobobenchError, match=re.escape(needle)):
            check_checkpoint(ckpt)
    huge = tmp_path / 'huge_header'; shutil.copytree(good, huge)   # a header length of 2^63: nothing read
    p = huge / 'model.safetensors'; p.write_bytes((2**63).to_bytes(8, 'little') + p.read_bytes()[8:])
    with pytest.raises(RobobenchError, match='its header claims 9223372036854775808 bytes'):
        check_checkpoint(huge)
    r = _cli('eval', '-e', 'toy/Point', '-m', tmp_path / 'shape', '--episodes', '1', '--no-video',
             '--run-folder', tmp_path / 'run')
    one_line(r, 'model.safetensors is corrupt', 'claims shape [1000000, 1000000] F32', 'copy the checkpoint again')
    assert not (tmp_path / 'run').exists()
    r = _cli('train', '--repo-ids', 'point', '--root', point_data, '--pretrained-path', tmp_path / 'shape',
             '--device', 'cpu', '--output-dir', tmp_path / 'out')   # finetuning from it: the same check
    one_line(r, 'model.safetensors is corrupt', 'claims shape [1000000, 1000000] F32')
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('flag, value', [('--scheduler', 'cosin'), ('--cache', 'sometimes'),
                                         ('--mixed-precision', 'fp8')])
def test_train_config_values_out_of_range_are_exit_2(tmp_path, flag, value):
    out = tmp_path / 'out'
    line = one_line(_cli('train', '--repo-ids', 'x', '--output-dir', out, flag, value),
                    f"{flag[2:].replace('-', '_')} must be", repr(value), flag)
    assert 'ValueError' not in line and not out.exists()
