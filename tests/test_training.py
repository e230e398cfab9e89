"""robobench.training: real LeRobot policies trained on CPU on small datasets, real simulator evaluation,
atomic checkpoints, kill -9 + resume, offline fail-fast for hub policies."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest

from robobench.training import TrainConfig, train, _Trainer, HubWeightsMissing, cli_train
from robobench.checkpoints import latest_checkpoint, is_complete

STATE, ENV, ACTION, CAM = 'observation.state', 'observation.environment_state', 'action', 'observation.images.top'
from tests._lerobot_data import make_lerobot as _make_lerobot, gradient_frames
TINY_ACT = dict(dim_model=32, dim_feedforward=64, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, latent_dim=8,
                n_vae_encoder_layers=1)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    "A BC dataset and a DAgger dataset (source/success columns), state + environment_state + one 64x64 video camera."
    rng = np.random.default_rng(0)
    base = tmp_path_factory.mktemp('train_data')
    feats = {STATE: {'dtype': 'float32', 'shape': (4,), 'names': None},
             ENV: {'dtype': 'float32', 'shape': (3,), 'names': None},
             ACTION: {'dtype': 'float32', 'shape': (2,), 'names': None},
             CAM: {'dtype': 'video', 'shape': (64, 64, 3), 'names': ['height', 'width', 'channels']}}
    def ep(T, e, shift=0.0, **extra):
        return {STATE: (rng.normal(size=(T, 4)) + shift).astype(np.float32),
                ENV: rng.normal(size=(T, 3)).astype(np.float32),
                ACTION: rng.uniform(-1, 1, (T, 2)).astype(np.float32), CAM: gradient_frames(T, 64, 64, e),
                'task': 'reach', **extra}
    _make_lerobot(base / 'bc', 'test/bc', [ep(T, e) for e, T in enumerate([12, 7, 15])], feats, use_videos=True)
    dg_feats = {**feats, 'source': {'dtype': 'int64', 'shape': (1,), 'names': None},
                'success': {'dtype': 'bool', 'shape': (1,), 'names': None}}
    dg_eps = []
    for e, ok in enumerate([True, False, True]):
        src = np.zeros((10, 1), np.int64); src[2:8] = 1
        dg_eps.append(ep(10, 5 + e, shift=2.0, source=src, success=np.full((10, 1), ok)))
    _make_lerobot(base / 'dagger', 'test/dagger', dg_eps, dg_feats, use_videos=True)
    return base


def test_ram_cache_gives_lerobot_items(data, tmp_path):
    "The RAM data path returns what LeRobotDataset + collate returns (windows, padding, DAgger subset, video frames)."
    import torch
    from torch.utils.data import default_collate
    cfg = TrainConfig(repo_ids=['bc', 'dagger'], root=str(data), weights=[0.5, 0.5], policy='diffusion', cache='ram',
                      policy_kwargs=dict(down_dims=[16, 32], crop_shape=[56, 56], n_groups=4,
                                         diffusion_step_embed_dim=16, num_inference_steps=2,
                                         pretrained_backbone_weights=None),
                      action_chunk_size=8, n_obs_steps=2, n_action_steps=4, output_dir=str(tmp_path / 'o'))
    t = _Trainer(cfg, progress=False)
    t.setup()
    assert t.use_ram and t.delta_indices[STATE] == [-1, 0] and t.delta_indices[ACTION] == list(range(-1, 7))
    # all BC frames + the 6 correction frames of each of 2 successful episodes
    assert len(t.cache) == 34 + 12 == len(t.mix)
    idx = torch.arange(len(t.cache))
    ours = t.cache.batch(idx)
    theirs = default_collate([t.mix.dataset[i] for i in idx.tolist()])
    for k in (STATE, ENV, ACTION, f'{STATE}_is_pad', f'{ACTION}_is_pad', f'{CAM}_is_pad', 'episode_index',
              'frame_index'):
        assert ours[k].shape == theirs[k].shape, k
        assert torch.equal(ours[k], theirs[k].to(ours[k].dtype)), k
    assert ours[CAM].shape == theirs[CAM].shape == (46, 2, 3, 64, 64)
    assert (ours[CAM] - theirs[CAM]).abs().max() <= 3 / 255    # video decoders may differ by a rounding step
    assert ours['task'] == list(theirs['task'])
    # batch indices are a pure function of (seed, step), so a resumed run draws the same batches
    from robobench.batches import batch_indices
    assert torch.equal(batch_indices(t.weights, 8, 0, 5), batch_indices(t.weights, 8, 0, 5))
    assert not torch.equal(batch_indices(t.weights, 8, 0, 5), batch_indices(t.weights, 8, 0, 6))


def test_incompatible_datasets_are_refused(data, tmp_path):
    feats = {STATE: {'dtype': 'float32', 'shape': (6,), 'names': None},
             ENV: {'dtype': 'float32', 'shape': (3,), 'names': None},
             ACTION: {'dtype': 'float32', 'shape': (2,), 'names': None}}
    rng = np.random.default_rng(1)
    _make_lerobot(data / 'other', 'test/other',
                  [{STATE: rng.normal(size=(5, 6)).astype(np.float32), ENV: rng.normal(size=(5, 3)).astype(np.float32),
                    ACTION: rng.normal(size=(5, 2)).astype(np.float32), 'task': 'x'}], feats)
    with pytest.raises(ValueError,
                       match=r'(?s)incompatible datasets.*observation.state: bc=\[4\] float32, other=\[6\] float32'):
        train(TrainConfig(repo_ids=['bc', 'other'], root=str(data), policy='act', training_steps=2,
                          output_dir=str(tmp_path / 'x')),
              progress=False, live_plot=False)
    assert not latest_checkpoint(tmp_path / 'x')


def test_hub_policies_fail_fast_offline(tmp_path, capsys):
    "pi0 / pi05 / smolvla need hub weights: offline they stop before touching the data, naming what to fetch."
    assert os.environ.get('HF_HUB_OFFLINE') == '1'
    for pol, repo in (('smolvla', 'lerobot/smolvla_base'), ('pi0', 'lerobot/pi0_base'),
                      ('pi05', 'google/paligemma-3b-pt-224')):
        t0 = time.perf_counter()
        with pytest.raises(HubWeightsMissing, match=f'huggingface-cli download {repo}'):
            train(TrainConfig(repo_ids=['does_not_exist'], root=str(tmp_path), policy=pol), progress=False,
                  live_plot=False)
        assert time.perf_counter() - t0 < 10
    assert cli_train(['--repo-ids', 'does_not_exist', '--root', str(tmp_path), '--policy', 'smolvla']) == 2
    assert 'needs pretrained weights' in capsys.readouterr().err


@pytest.mark.sim
def test_act_on_pickcube_checkpoints_load_and_serve(tmp_path):
    """ACT trains on collected PickCube demos, evaluates in ManiSkill, writes best/periodic/final; LeRobot loads them
    and robobench serves them."""
    from robobench.collect import collect
    collect('maniskill/PickCube-v1', 4, tmp_path / 'pick_demos', progress=False)
    out = tmp_path / 'ckpt'
    res = train(TrainConfig(repo_ids=['pick_demos'], root=str(tmp_path), policy='act', env='maniskill/PickCube-v1',
                            training_steps=30, eval_freq=15, eval_episodes=2, save_freq=15, log_freq=5, batch_size=8,
                            policy_kwargs=TINY_ACT, action_chunk_size=10, n_action_steps=5, checkpoint_dir=str(out)),
                progress=False, live_plot=False)
    run = out / 'act_pick_demos'
    assert res.out_dir == run and res.step == 30
    for name in ('best_model', 'checkpoint_15', 'checkpoint_30', 'final_model'):
        d = run / name
        assert is_complete(d) and (d / 'model.safetensors').exists() and (d / 'policy_preprocessor.json').exists(), name
        info = json.loads((d / 'train_info.json').read_text())
        assert (info['datasets'][0]['name'] == 'pick_demos' and info['config']['seed'] == 0
                and info['run_info']['packages']['lerobot'] == '0.6.1')
    assert (run / 'checkpoint_15' / 'training_state' / 'training_step.json').exists()
    assert json.loads((run / 'final_model' / 'robobench.json').read_text())['fps'] == 20
    recs = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in recs if 'loss' in r] == [5, 10, 15, 20, 25, 30]
    assert {'l1_loss', 'kld_loss', 'lr', 'grad_norm', 'data_s', 'update_s'} <= set(recs[0])
    evals = [r for r in recs if 'eval' in r]
    assert [r['step'] for r in evals] == [15, 30] and all(r['eval']['episodes'] == 2 for r in evals)
    assert (run / 'evals' / 'step_15' / 'episodes.jsonl').exists()
    # the environment_state is normalized (the LeRobot default would leave it raw)
    norm = {r['feature']: r['mode']
            for r in json.loads((run / 'final_model' / 'train_info.json').read_text())['normalization']}
    assert norm[ENV] == 'MEAN_STD'
    # LeRobot's own loader
    from lerobot.policies.act.modeling_act import ACTPolicy
    pol = ACTPolicy.from_pretrained(run / 'final_model')
    assert pol.config.chunk_size == 10 and pol.config.normalization_mapping['ENV'].name == 'MEAN_STD'
    # and robobench serve + the real openpi client
    from robobench.server import serve
    from openpi_client.websocket_client_policy import WebsocketClientPolicy
    with serve(run / 'best_model') as h:
        meta = WebsocketClientPolicy(h.host, h.port).get_server_metadata()
        assert meta['fps'] == 20 and meta['action_dim'] == 4
        c = WebsocketClientPolicy(h.host, h.port)
        out_ = c.infer({STATE: np.zeros(meta['input_features'][STATE]['shape'], np.float32),
                        ENV: np.zeros(meta['input_features'][ENV]['shape'], np.float32), 'task': 'pick'})
        assert out_['actions'].shape == (10, 4)


def test_diffusion_trains_on_point_and_evaluates(tmp_path):
    from robobench.collect import collect
    collect('toy/Point', 6, tmp_path / 'point', cameras=[], progress=False)
    res = train(TrainConfig(repo_ids=['point'], root=str(tmp_path), policy='diffusion', env='toy/Point',
                            training_steps=6, eval_freq=0, eval_episodes=2, log_freq=3, batch_size=8,
                            checkpoint_dir=str(tmp_path / 'c'),
                            policy_kwargs=dict(down_dims=[16, 32], n_groups=4, diffusion_step_embed_dim=16,
                                               num_inference_steps=2),
                            action_chunk_size=8, n_action_steps=4), progress=False, live_plot=False)
    assert res.step == 6 and [e['step'] for e in res.evals] == [6] and res.evals[0]['eval']['episodes'] == 2
    assert (res.final_dir / 'model.safetensors').exists() and res.best_dir is not None
    from robobench.clients import LocalClient  # LeRobot's default n_obs_steps=2: evaluated with select_action per step
    assert LocalClient(res.final_dir).metadata['execution'] == 'step'
    # the scheduler preset (cosine with warmup) is LeRobot's and is part of the resumable state
    assert (tmp_path / 'c' / 'diffusion_point' / 'checkpoint_6' / 'training_state' / 'scheduler_state.json').exists()


def _train_cmd(root, out, steps, extra=()):
    return [str(Path(sys.executable).parent / 'robobench'), 'train', '--repo-ids', 'point', '--root', str(root),
            '--policy', 'act', '--training-steps', str(steps), '--save-freq', '10', '--log-freq', '5',
            '--batch-size', '8', '--output-dir', str(out), '--action-chunk-size', '5', '--n-action-steps', '5',
            *[f'--policy.{k}={v}' for k, v in TINY_ACT.items()], *extra]


def _point_demos(root) -> dict:
    "6 toy/Point demos under root/point; returns the environment for `robobench train` subprocesses."
    from robobench.collect import collect
    collect('toy/Point', 6, root / 'point', cameras=[], progress=False)
    return {**os.environ, 'HF_HUB_OFFLINE': '1', 'PYTHONUNBUFFERED': '1'}


def _kill_when(cmd, env, cond, timeout=600) -> bool:
    "Run `cmd`; SIGKILL it as soon as `cond()` holds. True if it was killed (False: it ended first)."
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0, hit = time.time(), False
    while p.poll() is None and time.time() - t0 < timeout:
        if cond(): os.kill(p.pid, signal.SIGKILL); hit = True; break
        time.sleep(0.002)
    p.wait()
    return hit


@pytest.mark.slow
def test_kill_during_checkpoint_write_then_resume_matches_uninterrupted(tmp_path):
    """kill -9 while checkpoint_20 is being written; --resume continues from the last complete one and ends
    bit-identical."""
    from safetensors.torch import load_file
    env = _point_demos(tmp_path)
    straight = tmp_path / 'straight'
    subprocess.run(_train_cmd(tmp_path, straight, 30), check=True, env=env, capture_output=True, timeout=600)
    # interrupted run: SIGKILL as soon as the temp dir of checkpoint_20 appears
    killed = tmp_path / 'killed'
    hit = _kill_when(_train_cmd(tmp_path, killed, 30), env,
                     lambda: killed.exists() and any(d.name.startswith('.tmp-checkpoint_20') for d in killed.iterdir()))
    assert hit, 'the run finished before checkpoint_20 was written'
    assert latest_checkpoint(killed).name in ('checkpoint_10', 'checkpoint_20')   # never a half-written one
    assert not (killed / 'final_model').exists()
    # without --resume the run refuses to overwrite
    r = subprocess.run(_train_cmd(tmp_path, killed, 30), env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and 'resume' in r.stderr
    r = subprocess.run(_train_cmd(tmp_path, killed, 30, ['--resume']), env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'Resuming from' in r.stdout
    assert not any(d.name.startswith('.tmp-') for d in killed.iterdir())
    a = load_file(straight / 'final_model' / 'model.safetensors')
    b = load_file(killed / 'final_model' / 'model.safetensors')
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    steps = [json.loads(line)['step'] for line in (killed / 'metrics.jsonl').read_text().splitlines()]
    assert steps == [5, 10, 15, 20, 25, 30]


def test_wandb_offline_and_live_plot_records(tmp_path, monkeypatch):
    "use_wandb logs offline (no network) next to the checkpoints; metrics.jsonl carries data vs update time."
    from robobench.collect import collect
    from robobench.training import plot_training
    monkeypatch.setenv('WANDB_MODE', 'offline'); monkeypatch.setenv('WANDB_SILENT', 'true')
    collect('toy/Point', 4, tmp_path / 'point', cameras=[], progress=False)
    res = train(TrainConfig(repo_ids=['point'], root=str(tmp_path), policy='act', training_steps=4, log_freq=2,
                            batch_size=4, policy_kwargs=TINY_ACT, action_chunk_size=5, n_action_steps=5, use_wandb=True,
                            output_dir=str(tmp_path / 'o')), progress=False, live_plot=False)
    runs = list((tmp_path / 'o' / 'wandb').glob('offline-run-*'))
    assert len(runs) == 1 and list(runs[0].glob('*.wandb'))
    recs = res.records
    assert [r['step'] for r in recs] == [2, 4] and all(r['data_s'] >= 0 and r['update_s'] > 0 for r in recs)
    fig = plot_training(res.out_dir)
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 1   # no evaluation ran: no empty success axes


def test_policy_requirements_are_explained(tmp_path):
    "Policies that cannot learn from a dataset say why before training, instead of failing inside LeRobot."
    from robobench.collect import collect
    collect('toy/Point', 2, tmp_path / 'point', cameras=[], progress=False)
    cases = {'vqbet': 'only one image', 'tdmpc': "no 'next.reward' column", 'sac': 'online RL',
             'acts': "Did you mean 'act'"}
    for pol, msg in cases.items():
        with pytest.raises((ValueError, KeyError), match=msg):
            train(TrainConfig(repo_ids=['point'], root=str(tmp_path), policy=pol, training_steps=1,
                              output_dir=str(tmp_path / pol)), progress=False, live_plot=False)
        assert latest_checkpoint(tmp_path / pol) is None


@pytest.mark.slow
def test_resume_after_a_kill_before_the_first_checkpoint(tmp_path):
    """kill -9 before any checkpoint exists: --resume starts over without repeating steps in metrics.jsonl; train time
    adds up."""
    env = _point_demos(tmp_path)
    out = tmp_path / 'run'
    cmd = _train_cmd(tmp_path, out, 60) + ['--save-freq', '1000']
    m = out / 'metrics.jsonl'
    hit = _kill_when(cmd, env, lambda: m.exists() and m.read_text().count('\n') >= 2)
    assert hit and latest_checkpoint(out) is None, 'the run wrote a checkpoint before it was killed'
    killed_s = max(json.loads(line)['time_s'] for line in (out / 'metrics.jsonl').read_text().splitlines())
    r = subprocess.run(cmd + ['--resume'], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    steps = [json.loads(line)['step'] for line in (out / 'metrics.jsonl').read_text().splitlines()
             if 'loss' in json.loads(line)]
    assert steps == list(range(5, 61, 5))
    summ = json.loads((out / 'train_summary.json').read_text())
    assert summ['train_s'] >= killed_s + summ['segment_train_s'] - 0.01
