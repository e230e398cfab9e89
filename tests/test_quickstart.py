"""The finetune and quickstart templates executed by papermill with tiny parameters (real kernel, real LeRobot,
real policy servers and websocket clients), and reproducibility of the quickstart's evaluation outcomes."""
import json, re
from pathlib import Path
import pytest
from robobench.core import read_json, read_jsonl
from robobench.runs import run, template_parameters

TINY_ACT = {'dim_model': 32, 'dim_feedforward': 64, 'n_heads': 2, 'n_encoder_layers': 1, 'n_decoder_layers': 1,
            'latent_dim': 8, 'n_vae_encoder_layers': 1}


def test_finetune_template_on_point(tmp_path):
    from robobench.collect import collect
    collect('toy/Point', 8, tmp_path / 'data' / 'point', cameras=[], progress=False)
    r = run('finetune', {'DATASETS': ['point'], 'ROOT': str(tmp_path / 'data'), 'ENV': 'toy/Point',
                         'TRAINING_STEPS': 40, 'EVAL_FREQ': 20, 'EVAL_EPISODES': 3, 'BATCH_SIZE': 16,
                         'POLICY_KWARGS': TINY_ACT, 'ACTION_CHUNK_SIZE': 5, 'N_ACTION_STEPS': 5},
            name='point', root=tmp_path / 'runs')
    assert r.status == 'done', r.error
    m = r.metrics
    assert m['steps'] == 40 and m['final_eval']['episodes'] == 3 and m['best_step'] in (20, 40)
    ck = r.run_dir / 'checkpoints'
    assert (ck / 'final_model' / 'model.safetensors').exists() and (ck / 'best_model' / 'train_info.json').exists()
    assert [x['step'] for x in read_jsonl(ck / 'metrics.jsonl') if 'eval' in x] == [20, 40]


def _quick(tmp_path, name):
    return run('quickstart', {'ENV': 'toy/Point', 'DEMOS': 10, 'TRAINING_STEPS': 150, 'BATCH_SIZE': 16,
                              'POLICY_KWARGS': TINY_ACT, 'ACTION_CHUNK_SIZE': 5, 'N_ACTION_STEPS': 5,
                              'EVAL_EPISODES': 8, 'VIDEO_EPISODES': 3, 'SHOW_VIDEOS': 1},
               name=name, root=tmp_path / 'runs')


@pytest.mark.slow
def test_quickstart_reduced_is_reproducible(tmp_path):
    "A reduced quickstart (collect → inspect → ACT → serve → websocket eval of policy and expert) twice: same outcomes."
    assert {'DEMOS', 'TRAINING_STEPS', 'EVAL_EPISODES', 'RUN_DIR', 'SEED'} <= set(template_parameters('quickstart'))
    a, b = _quick(tmp_path, 'a'), _quick(tmp_path, 'b')
    for r in (a, b):
        assert r.status == 'done', r.error
        m = r.metrics
        assert m['demos'] == 10 and m['train_steps'] == 150 and m['episodes'] == 8
        assert m['expert_success_rate'] == 1.0                       # the scripted expert, served over the websocket
        assert Path(m['report']).exists()
        for who in ('act', 'scripted'):   # videos only for the first VIDEO_EPISODES seeds
            assert len(list((r.run_dir / 'eval' / who / 'videos').glob('*.mp4'))) == 3
        for who in ('act', 'scripted'):   # both were evaluated through a policy server on 127.0.0.1
            assert re.fullmatch(r'127\.0\.0\.1:\d+', read_json(r.run_dir / 'eval' / who / 'params.json')['client'])
    outcomes = [[(e['seed'], e['success'], e['length'])
                 for e in read_jsonl(r.run_dir / 'eval' / 'act' / 'episodes.jsonl')]
                for r in (a, b)]
    assert sorted(outcomes[0]) == sorted(outcomes[1])
    assert a.metrics['success_rate'] == b.metrics['success_rate']


def test_quickstart_defaults_use_acts_temporal_ensembling():
    "Issue 25: the quickstart re-queries ACT every step and ensembles its chunks (46/50 vs 32/50, same weights)."
    from robobench.training import make_policy_config
    p = {k: v['default'] for k, v in template_parameters('quickstart').items()}
    assert p['N_ACTION_STEPS'] == 1 and p['POLICY_KWARGS']['temporal_ensemble_coeff'] == 0.01
    feats = {'observation.state': {'dtype': 'float32', 'shape': (9,)},
             'observation.environment_state': {'dtype': 'float32', 'shape': (6,)},
             'action': {'dtype': 'float32', 'shape': (4,)}}
    cfg = make_policy_config('act', feats, p['POLICY_KWARGS'], action_chunk_size=p['ACTION_CHUNK_SIZE'],
                             n_action_steps=p['N_ACTION_STEPS'])
    assert (cfg.chunk_size, cfg.n_action_steps, cfg.temporal_ensemble_coeff, cfg.use_vae) == (20, 1, 0.01, False)


def test_readme_quickstart_numbers_come_from_a_run(tmp_path):
    "scripts/quickstart_numbers.py writes a run's own numbers (metrics.json, status.json) into the README's block."
    import importlib.util, yaml
    script = Path(__file__).parent.parent / 'scripts' / 'quickstart_numbers.py'
    spec = importlib.util.spec_from_file_location('qn', script)
    qn = importlib.util.module_from_spec(spec); spec.loader.exec_module(qn)
    run = tmp_path / 'run'; run.mkdir()
    (run / 'params.yaml').write_text(yaml.safe_dump({'WORKERS': 2}))
    (run / 'status.json').write_text(json.dumps({'status': 'done', 'seconds': 231.4}))
    (run / 'metrics.json').write_text(json.dumps({
        'episodes': 50, 'success_rate': 0.9, 'wilson_95': [0.7864, 0.9565], 'train_steps': 3000,
        'timings_s': {'collect_s': 31.2, 'train_s': 118.0, 'serve_and_eval_s': 70.4},
        'eval': {'ACT (trained)': {'successes': 45, 'episodes': 50},
                 'scripted expert': {'successes': 50, 'episodes': 50}}}))
    text = qn.paragraph(run)
    for part in ('3 min 51 s end to end', 'collection 31 s', 'training 118 s', '70 s (2 worker processes)',
                 '3000 steps', '45/50 held-out seeds = 90% [79%, 96%]', 'scripted expert on 50/50'):
        assert part in text, (part, text)
    readme = (Path(__file__).parent.parent / 'README.md').read_text()
    assert readme.count(qn.BEGIN) == 1 and readme.count(qn.END) == 1   # the block the script rewrites
    (run / 'status.json').write_text(json.dumps({'status': 'failed', 'seconds': 10}))
    with pytest.raises(SystemExit): qn.paragraph(run)   # only a finished run's numbers
