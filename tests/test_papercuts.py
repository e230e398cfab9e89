"""Issue 25, newcomer papercuts: inline videos at the env's rate, report.html in every evaluation run folder, quiet
third-party log lines inside robobench's calls only, `res.show()` shows videos only, the kernel of executed
notebooks, the training plot without an evaluation, the gallery's empty filter, long action legends."""
import base64, json, logging, re, shutil, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from robobench.core import read_jsonl
from robobench.evaluation import EvalConfig, EvalResult, evaluate

ROBOBENCH = [sys.executable, '-c', 'import sys; from robobench.cli import main; sys.exit(main())']


def inline_videos(monkeypatch, fn) -> list[bytes]:
    "The mp4s `fn()` shows inline through mediapy (decoded from the HTML it would display)."
    import mediapy
    shown = []
    monkeypatch.setattr(mediapy, '_display_html', shown.append)
    fn()
    return [base64.b64decode(m) for html in shown for m in re.findall(r'data:video/mp4;base64,([A-Za-z0-9+/=]+)', html)]


def mp4_info(data: bytes, tmp_path) -> tuple[float, int, float | None]:
    "(fps, frames, container duration in s from ffprobe if there is one) of an mp4."
    import mediapy
    path = tmp_path / 'shown.mp4'; path.write_bytes(data)
    video = mediapy.read_video(path)
    duration = None
    if shutil.which('ffprobe'):
        out = subprocess.run(['ffprobe', '-v', 'error', '-show_entries', 'format=duration', '-of', 'csv=p=0',
                              str(path)], capture_output=True, text=True).stdout.strip()
        duration = float(out) if out else None
    return float(video.metadata.fps), len(video), duration


def test_inline_videos_play_at_the_env_rate(tmp_path, monkeypatch):
    "toy/Point runs at 10 Hz: with every 2nd frame kept the inline video plays at 5 fps (not mediapy's 20)."
    from robobench.viz import show_episodes
    run = tmp_path / 'run'
    res = evaluate('toy/Point', 'random', episodes=2, max_steps=12, video_every=2, video_outcomes='all',
                   run_folder=run, progress=False, report=False)
    assert [r['video_fps'] for r in res.episodes] == [5.0, 5.0]       # kept with each episode's video
    assert [r['video_fps'] for r in read_jsonl(run / 'episodes.jsonl')] == [5.0, 5.0]
    (data,) = inline_videos(monkeypatch, lambda: show_episodes(run, n=1))
    fps, frames, duration = mp4_info(data, tmp_path)
    import mediapy
    on_disk = mediapy.read_video(run / res.episodes[0]['video'])
    assert fps == pytest.approx(5.0) and frames == len(on_disk) > 3
    if duration is not None: assert duration == pytest.approx(frames / 5.0, abs=0.05)
    # a run folder written before records kept `video_fps`: the mp4's own rate
    recs = read_jsonl(run / 'episodes.jsonl')
    (run / 'episodes.jsonl').write_text(''.join(json.dumps({k: v for k, v in r.items() if k != 'video_fps'}) + '\n'
                                                for r in recs))
    (data,) = inline_videos(monkeypatch, lambda: show_episodes(run, n=1))
    assert mp4_info(data, tmp_path)[0] == pytest.approx(5.0)
    (data,) = inline_videos(monkeypatch, lambda: show_episodes(run, n=1, fps=25))   # an explicit fps still wins
    assert mp4_info(data, tmp_path)[0] == pytest.approx(25.0)


def test_cli_eval_leaves_a_report_of_its_videos(tmp_path, capsys):
    from robobench.cli import main
    run = tmp_path / 'run'
    code = main(['eval', '-e', 'toy/Point', '--policy.client', 'random', '--episodes', '2', '--max-steps', '5',
                 '--run-folder', str(run)])
    assert code == 0, capsys.readouterr().err
    html = (run / 'report.html').read_text()
    videos = sorted((run / 'videos').glob('*.mp4'))
    assert len(videos) == 2                                          # random on the toy: two failures, two videos
    assert html.count('<video') == len(videos)
    for video in videos:                                             # each one embedded (the report is self-contained)
        assert base64.b64encode(video.read_bytes()).decode() in html
    assert '0/2</b> completed episodes' in html and 'seed 0' in html and 'seed 1' in html
    code = main(['eval', '-e', 'toy/Point', '--policy.client', 'random', '--episodes', '2', '--max-steps', '5',
                 '--run-folder', str(tmp_path / 'plain'), '--no-report'])
    assert code == 0 and not (tmp_path / 'plain' / 'report.html').exists()   # --no-report: none


class _Broken:
    "A client whose every request fails: every episode ends in an error."
    def reset(self): pass
    def infer(self, obs, instruction, return_viz=False): raise RuntimeError('the policy fell over')


def test_report_also_when_episodes_errored(tmp_path):
    res = evaluate('toy/Point', _Broken(), episodes=2, run_folder=tmp_path / 'run', progress=False)
    assert res.summary['errors'] == 2
    html = (tmp_path / 'run' / 'report.html').read_text()
    assert '2 episode(s) ended in an ERROR' in html and 'the policy fell over' in html


def test_evaluate_template_writes_report_and_names_its_kernel(tmp_path):
    "The papermill evaluate template leaves report.html; the executed notebook names the kernel that ran it."
    from robobench.runs import default_kernel, run
    r = run('evaluate', {'ENV': 'toy/Point', 'CLIENT': 'random', 'EPISODES': 2, 'MAX_STEPS': 5, 'SHOW_VIDEOS': 0},
            root=tmp_path)
    assert r.status == 'done', r.error
    assert (r.run_dir / 'report.html').exists()
    nb = json.loads(r.notebook.read_text())
    assert nb['metadata']['kernelspec']['name'] == default_kernel() == 'robobench'   # make setup installs it
    import nbformat
    from nbformat.sign import NotebookNotary                          # still signed after the edit
    assert NotebookNotary().check_signature(nbformat.read(str(r.notebook), as_version=4))


def test_make_lab_opens_the_repository_root():
    makefile = (Path(__file__).resolve().parent.parent / 'Makefile').read_text()
    lab = makefile.split('\nlab:', 1)[1].split('\n\n', 1)[0]
    assert 'jupyter lab' in lab and '--notebook-dir=nbs' not in lab and '--notebook-dir=.' in lab


def test_show_returns_none_and_show_episodes_prints_nothing(tmp_path, monkeypatch):
    import robobench.viz  # noqa: F401 (attaches res.show)
    from IPython.core.formatters import DisplayFormatter
    from robobench.viz import show_episodes
    res = evaluate('toy/Point', 'random', episodes=2, max_steps=5, run_folder=tmp_path / 'run', progress=False,
                   report=False)
    out = []
    videos = inline_videos(monkeypatch, lambda: out.append(res.show(outcome='failure')))
    assert out == [None] and len(videos) == 2                        # the videos, and nothing to print after them
    shown = show_episodes(res, 'failure')
    assert [r['seed'] for r in shown] == [0, 1]                      # still the episodes, for code
    assert DisplayFormatter().format(shown) == ({}, {})              # but a cell's last line shows nothing more


def test_quiet_filters_only_inside_robobench_calls():
    from robobench.core import quiet_third_party
    seen = []
    class Keep(logging.Handler):
        def emit(self, record): seen.append(record.getMessage())
    root = logging.getLogger(); handler = Keep(); root.addHandler(handler)
    try:
        with quiet_third_party():
            logging.warning('No accelerated backend detected. Using default cpu, this will be slow.')
            logging.getLogger('lerobot.configs.policies').warning("Device 'None' is not available. Switching to 'cpu'.")
            logging.warning('a warning of the user')
        logging.warning('No accelerated backend detected. Using default cpu, this will be slow.')
    finally: root.removeHandler(handler)
    assert seen == ['a warning of the user', 'No accelerated backend detected. Using default cpu, this will be slow.']
    assert not root.filters and not logging.getLogger('lerobot.configs.policies').filters


@pytest.mark.slow
def test_lerobot_policy_config_is_quiet(capfd):
    "Building a LeRobot policy config through robobench logs no device lines (LeRobot's own call does)."
    from robobench.collect import dataset_features
    from robobench.envs import make_env
    from robobench.training import make_policy_config
    feats = dataset_features(make_env('toy/Point', cameras=[]).spec)
    capfd.readouterr()
    assert make_policy_config('act', feats).device == 'cpu'
    err = capfd.readouterr().err
    assert 'No accelerated backend' not in err and 'is not available' not in err, err


def test_thread_server_info_lines_stay_in_its_logs(capfd):
    "A server in a thread keeps INFO lines for handle.logs(); a root handler (LeRobot adds one) gets none of them."
    from robobench.policies import RandomPolicy
    from robobench.server import serve
    root = logging.getLogger(); handler = logging.StreamHandler(sys.stderr); root.addHandler(handler)
    try:
        with serve(RandomPolicy(2, 3), port=0) as srv:
            assert srv.healthy()
        assert 'listening on' in srv.logs()
    finally: root.removeHandler(handler)
    err = capfd.readouterr().err
    assert 'listening on' not in err and 'stopped' not in err, err


@pytest.mark.sim
def test_maniskill_eval_prints_no_cuda_warning(tmp_path):
    "The CUDA line ManiSkill logs on a machine without a GPU (it falls back to the CPU) is not shown by an eval."
    p = subprocess.run(ROBOBENCH + ['eval', '-e', 'maniskill/PickCube-v1', '--policy.client', 'random', '--episodes',
                                    '1', '--max-steps', '2', '--run-folder', str(tmp_path / 'run')],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    for line in ('CUDA device was not found', 'No accelerated backend', "Device 'None' is not available",
                 'robobench.server'):
        assert line not in p.stderr, p.stderr[-3000:]
    assert (tmp_path / 'run' / 'report.html').exists()


def test_long_action_legends_go_beside_the_plot(tmp_path):
    "ALOHA's 14 action dims: the legend sits right of the axes instead of covering the curves."
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from robobench.stats import summarize
    from robobench.viz import plot_episode
    rec = {'seed': 0, 'success': False, 'outcome': 'failure', 'length': 30, 'trajectory': 'seed0.npz'}
    np.savez(tmp_path / 'seed0.npz', action=np.random.default_rng(0).normal(size=(30, 14)))
    res = EvalResult(tmp_path, EvalConfig(env='aloha/AlohaInsertion-v0'), [rec], summarize([rec]))
    ax = plot_episode(res, 0); ax.figure.canvas.draw()
    legend = ax.get_legend()
    assert len(legend.get_texts()) == 14
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1   # beside, not over
    plt.close(ax.figure)


def test_training_plot_without_evaluation_has_no_empty_axes():
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from robobench.training import plot_training
    recs = [{'step': s, 'loss': 1 / (s + 1)} for s in range(0, 50, 10)]
    fig = plot_training(recs)
    assert [a.get_title() for a in fig.axes] == ['training loss']; plt.close(fig)
    fig = plot_training(recs + [{'step': 40, 'eval': {'success_rate': .5, 'ci_low': .2, 'ci_high': .8}}])
    assert [a.get_title() for a in fig.axes] == ['training loss', 'eval success (95% Wilson)']; plt.close(fig)
    fig, axes = plt.subplots(1, 2)                                   # axes the caller gave: the empty one hidden
    plot_training(recs, ax=axes); assert not axes[1].get_visible(); plt.close(fig)


def test_gallery_empty_filter_says_so():
    pytest.importorskip('ipywidgets')
    from robobench.viz import browse_episodes
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        evaluate('toy/Point', 'random', episodes=2, max_steps=5, run_folder=d, progress=False, report=False)
        gallery = browse_episodes(d)
        outcome, body = gallery.children[1], gallery.children[3]
        plot, rec = body.children[1].children
        assert plot.layout.display is None and plot.value              # a failure with its action plot
        outcome.value = 'success'                                       # none: text, and no empty (broken) image
        assert plot.layout.display == 'none' and 'no episodes match' in rec.value


# --- papermill failures (point 8): one line, the cell as the notebook shows it, exit 2 for the user's mistakes -----

def _cli_flags(text: str) -> list[str]:
    "The CLI-style options a message suggests (`-m`, `--policy.client`, ...), `-p` (a template parameter) aside."
    return [f for f in re.findall(r'(?<![\w./-])--?[A-Za-z][\w.<>-]*', text) if f != '-p']


def test_run_missing_checkpoint_is_one_line_and_exit_2(tmp_path):
    "`robobench run evaluate -p CHECKPOINT checkpoints/nope`: one line naming the parameter, exit 2, no run folder."
    from robobench.runs import template_parameters
    p = subprocess.run(ROBOBENCH + ['run', 'evaluate', '-p', 'CHECKPOINT', 'checkpoints/nope', '--root',
                                    str(tmp_path / 'runs')], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and 'Traceback' not in p.stderr, p.stderr
    assert "CHECKPOINT 'checkpoints/nope'" in lines[0] and 'not a checkpoint directory' in lines[0]
    assert not _cli_flags(lines[0]), lines[0]                          # no -m / --policy.client: not this template's
    named = set(re.findall(r'-p ([A-Z_]+)', lines[0]))
    assert named and named <= set(template_parameters('evaluate')), named
    assert not (tmp_path / 'runs').exists()                            # failed before any work: nothing left behind


def test_run_bad_parameter_value_in_a_cell_is_exit_2_with_its_in_number(tmp_path, capfd):
    "A robobench error raised inside the template (a client spec naming nothing): exit 2, one line, In [N], -p names."
    from robobench.runs import cli_run, template_parameters
    code = cli_run(['evaluate', '-p', 'ENV', 'toy/Point', '-p', 'CLIENT', 'no_such_client', '-p', 'EPISODES', '1',
                    '--root', str(tmp_path)])
    cap = capfd.readouterr()   # fd 2: the kernel's own log lines too
    assert code == 2, cap.err
    (line,) = cap.err.strip().splitlines()
    nb = json.loads(Path(cap.out.strip().splitlines()[-1], 'evaluate.ipynb').read_text())
    (failed,) = [c for c in nb['cells'] if c['cell_type'] == 'code'
                 and any(o.get('output_type') == 'error' for o in c.get('outputs', []))]
    assert f"In [{failed['execution_count']}]" in line, line           # as the notebook shows it, not a 0-based index
    assert "'no_such_client' is not a host:port" in line and not _cli_flags(line), line
    named = set(re.findall(r'-p ([A-Z_]+)', line))
    assert 'CLIENT' in named and named <= set(template_parameters('evaluate')), named


def test_run_bug_in_a_template_cell_is_exit_1_with_cell_and_last_line(tmp_path, capfd):
    "A real bug in a cell is not the user's mistake: exit 1, the cell's In [N] and the error's last line."
    from robobench.runs import cli_run
    cells = [{'cell_type': 'code', 'id': 'p', 'metadata': {'tags': ['parameters']}, 'execution_count': None,
              'outputs': [], 'source': 'SEED = 0  # seed\nRUN_DIR = None  # set by the runner\nN = 2  # a count'},
             {'cell_type': 'code', 'id': 'a', 'metadata': {}, 'execution_count': None, 'outputs': [],
              'source': 'x = N * 2'},
             {'cell_type': 'code', 'id': 'b', 'metadata': {}, 'execution_count': None, 'outputs': [],
              'source': "raise KeyError('first line\\nlast line of the bug')"}]
    tpl = tmp_path / 'buggy.ipynb'
    tpl.write_text(json.dumps({'cells': cells, 'metadata': {'kernelspec': {'name': 'python3', 'language': 'python',
                   'display_name': 'Python 3'}}, 'nbformat': 4, 'nbformat_minor': 5}))
    code = cli_run([str(tpl), '-p', 'N', '3', '--root', str(tmp_path / 'runs')])
    cap = capfd.readouterr()   # fd 2: the kernel's own log lines too
    assert code == 1, cap.err
    (line,) = cap.err.strip().splitlines()
    assert 'failed at In [4]' in line and 'KeyError' in line, line     # parameters, injected, x = ..., raise
    assert 'Traceback' not in line and 'executed notebook' in line
    assert Path(cap.out.strip().splitlines()[-1], 'buggy.ipynb').exists()


# --- dimension names (part 2): every backend names its action dims and state entries; datasets, inspect, report ---

def test_collected_dataset_and_inspect_stats_name_every_dimension(tmp_path, capsys):
    "collect writes LeRobot's `features[key]['names']`; `inspect --stats` prints them (no a0 / pos_0)."
    from robobench.cli import main
    out = tmp_path / 'ds'
    assert main(['collect', '--env', 'toy/Point', '--episodes', '2', '--out', str(out)]) == 0
    feats = json.loads((out / 'meta' / 'info.json').read_text())['features']
    assert feats['action']['names'] == ['dx', 'dy']
    assert feats['observation.state']['names'] == ['pos.x', 'pos.y']
    assert feats['observation.environment_state']['names'] == ['goal.x', 'goal.y']
    capsys.readouterr()
    assert main(['inspect', str(out), '--stats']) == 0
    text = capsys.readouterr().out
    rows = {line.split()[1] for line in text.splitlines() if re.match(r'\s+\d+\s+\S+\s+-?\d', line)}
    assert {'dx', 'dy', 'pos.x', 'pos.y', 'goal.x', 'goal.y'} <= rows, text
    assert 'action_0' not in text and 'a0' not in rows


def test_aloha_actions_are_named_like_its_joints(tmp_path):
    "ALOHA's 14 joint targets carry the state's joint names, in a dataset's info.json too (LeRobot writes them)."
    from robobench.collect import dataset_features
    from robobench.envs import make_env
    from robobench.writer import EpisodeWriter
    env = make_env('aloha/TransferCube', cameras=[])
    try:
        spec = env.spec
        obs, _ = env.reset(seed=0)
        frames = [{'observation.state': obs['state'], 'observation.environment_state': obs['env_state'],
                   'action': np.zeros(spec.action_dim, np.float32), 'episode_success': np.array([True]),
                   'seed': np.array([0], np.int64)} for _ in range(3)]
    finally: env.close()
    names = spec.dim_names('action')
    assert names == spec.dim_names('state') and len(names) == 14
    assert names[:7] == ['left_waist', 'left_shoulder', 'left_elbow', 'left_forearm_roll', 'left_wrist_angle',
                         'left_wrist_rotate', 'left_gripper'] and names[7] == 'right_waist'   # LeRobot's ALOHA names
    assert spec.dim_names('env_state')[:4] == ['cube_pose.x', 'cube_pose.y', 'cube_pose.z', 'cube_pose.qw']
    with EpisodeWriter(tmp_path / 'ds', dataset_features(spec), spec.fps, 'local/aloha') as writer:
        writer.save(frames, spec.instruction, seed=0, success=True, steps=3)
    feats = json.loads((tmp_path / 'ds' / 'meta' / 'info.json').read_text())['features']
    assert feats['action']['names'] == names and feats['observation.state']['names'] == names


def test_pusht_and_toy_names():
    from robobench.envs import make_env
    env = make_env('pusht/PushT', cameras=[])
    try:
        assert env.spec.dim_names('action') == ['x', 'y']
        assert env.spec.dim_names('state') == ['agent_pos.x', 'agent_pos.y']
        es = env.spec.dim_names('env_state')
        assert es[:3] == ['block_pose.x', 'block_pose.y', 'block_pose.angle'] and len(set(es)) == len(es) == 19
    finally: env.close()


@pytest.mark.sim
def test_maniskill_names_follow_the_control_mode():
    from robobench.envs import make_env
    joints = [f'panda_joint{i}' for i in range(1, 8)]
    expected = {'pd_ee_delta_pose': ['dx', 'dy', 'dz', 'droll', 'dpitch', 'dyaw', 'gripper'],
                'pd_joint_delta_pos': joints + ['gripper']}
    for mode, names in expected.items():
        env = make_env('maniskill/PickCube-v1', cameras=[], control_mode=mode)
        try: spec = env.spec
        finally: env.close()
        assert spec.dim_names('action') == names, mode
        state = spec.dim_names('state')
        assert state[:9] == [f'{j}.pos' for j in joints] + ['panda_finger_joint1.pos', 'panda_finger_joint2.pos']
        assert not [n for n in state if n.startswith(('qpos_', 'qvel_'))] and len(set(state)) == len(state)
        assert spec.lerobot_features()['action']['names'] == names


@pytest.mark.sim
def test_robosuite_osc_names():
    from robobench.envs import make_env
    env = make_env('robosuite/Lift', cameras=[])
    try: spec = env.spec
    finally: env.close()
    assert spec.dim_names('action') == ['dx', 'dy', 'dz', 'dax', 'day', 'daz', 'gripper']
    state = spec.dim_names('state')
    assert state[0] == 'robot0_joint1.pos' and 'robot0_eef_quat.qw' in state and len(set(state)) == len(state)


def test_report_and_gallery_plots_use_the_action_names(tmp_path, capsys):
    "An eval records the env's dimension names in run_info.json; the report's and gallery's action plots use them."
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from robobench.cli import main
    from robobench.viz import plot_episode
    run = tmp_path / 'run'
    assert main(['eval', '-e', 'toy/Point', '--policy.client', 'random', '--episodes', '1', '--max-steps', '4',
                 '--run-folder', str(run)]) == 0, capsys.readouterr().err
    info = json.loads((run / 'run_info.json').read_text())
    assert info['dim_names']['action'] == ['dx', 'dy'] and info['dim_names']['observation.state'] == ['pos.x', 'pos.y']
    assert 'actions: dx, dy' in (run / 'report.html').read_text()
    ax = plot_episode(run, 0)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ['dx', 'dy']; plt.close(ax.figure)


def test_eval_json_of_a_checkpoint_is_pure_json(tmp_path):
    """`robobench eval -m CHECKPOINT --json` prints only the summary on stdout: LeRobot's 'Loading weights' print is
    dropped."""
    from robobench.envs import make_env
    from robobench.policies import FeatureSpec, tiny_act_checkpoint
    spec = make_env('toy/Point', cameras=[]).spec
    ckpt = tiny_act_checkpoint(tmp_path / 'ckpt', {'observation.state': FeatureSpec([spec.state_dim]),
                                                   'observation.environment_state': FeatureSpec([spec.env_state_dim])},
                               action_dim=spec.action_dim, chunk_size=5)
    p = subprocess.run([*ROBOBENCH, 'eval', '-m', str(ckpt), '-e', 'toy/Point', '--episodes', '1', '--max-steps', '3',
                        '--no-video', '--json'], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.loads(p.stdout)                                   # the whole stdout is one JSON document
    assert summary['episodes'] == 1 and 'Loading weights' not in p.stdout + p.stderr
