"""The episode browser (robobench.browse) and the dataset checks/stats it shares names with, on a real LeRobot dataset:
dimension names from info.json in legends, readout and `robobench inspect --stats`; every camera; one plot and no
frozen pyplot copy (checked in a real Jupyter kernel); cheap frame steps; `inspect --check` flags short episodes."""
import json, statistics, time
from pathlib import Path
import numpy as np
import pytest

from robobench.data import ACTION, STATE, ENV_STATE, open_dataset, cli_inspect
from tests._lerobot_data import make_lerobot, gradient_frames

STATE_NAMES = [f'joint_{i}' for i in range(25)]
MOTORS = ['dx', 'dy', 'dz', 'gripper']
LENGTHS = (30, 3, 40, 35)  # episode 1 is suspiciously short
CAMS = ['observation.images.front', 'observation.images.wrist']


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    """25-dim state named by a list, 17-dim environment state without names, 4-dim action named by a dict;
    2 cameras (PNG + video)."""
    H, W = 96, 128
    feats = {STATE: {'dtype': 'float32', 'shape': (25,), 'names': STATE_NAMES},
             ENV_STATE: {'dtype': 'float32', 'shape': (17,), 'names': None},
             ACTION: {'dtype': 'float32', 'shape': (4,), 'names': {'motors': MOTORS}},
             CAMS[0]: {'dtype': 'image', 'shape': (H, W, 3), 'names': ['height', 'width', 'channels']},
             CAMS[1]: {'dtype': 'video', 'shape': (H, W, 3), 'names': ['height', 'width', 'channels']}}
    rng = np.random.default_rng(0)
    eps = [{STATE: np.cumsum(rng.normal(size=(T, 25)), 0).astype(np.float32),
            ENV_STATE: rng.normal(size=(T, 17)).astype(np.float32),
            ACTION: rng.uniform(-1, 1, (T, 4)).astype(np.float32), CAMS[0]: gradient_frames(T, H, W, e + 3),
            CAMS[1]: gradient_frames(T, H, W, e), 'task': 'stack the cube'} for e, T in enumerate(LENGTHS)]
    return make_lerobot(tmp_path_factory.mktemp('browse') / 'ds', 'test/browse', eps, feats, use_videos=True)


ENV_NAMES = [f'environment_state_{i}' for i in range(17)]


def _legend(ax): return [t.get_text() for t in ax.get_legend().get_texts()]


def test_dim_names_in_legends_and_readout(root):
    ds = open_dataset(root)
    assert (ds.dim_names(STATE) == STATE_NAMES and ds.dim_names(ACTION) == MOTORS
            and ds.dim_names(ENV_STATE) == ENV_NAMES)
    b = ds.browse()
    assert [_legend(ax) for ax in b._axes] == [STATE_NAMES, ENV_NAMES, MOTORS]
    b.fr_slider.value = 7
    ep = ds.episode(0, cameras=False)
    for name, v in [('joint_3', ep[STATE][7, 3]), ('gripper', ep[ACTION][7, 3]),
                    ('environment_state_16', ep[ENV_STATE][7, 16])]:
        assert f'{name} = {v:.4g}' in b.readout.value
    assert 'frame 7' in b.readout.value and 'title="action[3]: gripper"' in b.readout.value
    # names given for a view without any (RLDS, or override)
    ds.set_dim_names({ENV_STATE: [f'obj_{i}' for i in range(17)]})
    b2 = ds.browse(episode=2)
    assert _legend(b2._axes[1]) == [f'obj_{i}' for i in range(17)]


def test_every_camera_and_exactly_one_plot_no_pyplot_figure(root):
    import ipywidgets as W
    import matplotlib.pyplot as plt
    plt.close('all')
    ds = open_dataset(root)
    b = ds.browse()
    b.fr_slider.value = 5; b.ep_slider.value = 2; b.fr_slider.value = 9
    assert sorted(b.images) == CAMS and all(len(im.value) > 100 for im in b.images.values())
    def walk(w): return [w] + [x for c in getattr(w, 'children', ()) for x in walk(c)]
    ws = walk(b.widget)
    assert sum(isinstance(w, W.Image) for w in ws) == len(CAMS) + 1  # every camera + ONE plot
    assert not any(isinstance(w, W.Output) for w in ws)
    assert b.plot.value[:4] == b'\x89PNG'
    # a pyplot-managed figure is what the inline backend shows again, frozen, under the widget
    assert plt.get_fignums() == []
    fig = ds.render(2, n_frames=4)
    assert plt.get_fignums() == [] and _legend(fig.axes[-1]) == MOTORS  # outside IPython not left open either


def test_frame_step_moves_cursor_without_replot(root):
    ds = open_dataset(root)
    b = ds.browse(episode=2)
    draws = []
    orig = b._canvas.draw
    b._canvas.draw = lambda *a, **k: (draws.append(1), orig(*a, **k))
    b.fr_slider.value = 1  # warm-up
    times, plots = [], set()
    for t in range(2, 22):
        t0 = time.perf_counter(); b.fr_slider.value = t; times.append(time.perf_counter() - t0)
        plots.add(b.plot.value)
        assert list(b._cursors[0].get_xdata()) == [t, t]
    med = statistics.median(times)
    print(f'\nframe step (in process, 2 cameras, 25+17+4 dims): median {med * 1e3:.1f} ms, '
          f'max {max(times) * 1e3:.1f} ms')
    assert draws == []                 # no full redraw on a frame step
    assert len(plots) == 20            # ... but the cursor did move in the image
    assert med < 0.25


@pytest.mark.slow
def test_in_a_real_kernel_one_output_and_fast_steps(root):
    """What JupyterLab gets: the browser cell shows exactly one output (the widget) and no PNG of a figure anywhere;
    frame steps are cheap; `ds.render` shows its figure exactly once whether or not it is the cell's value."""
    nbformat = pytest.importorskip('nbformat'); nbclient = pytest.importorskip('nbclient')
    cells = ["%matplotlib inline\nimport json, time, statistics\nfrom robobench.data import open_dataset\n"
             f"ds = open_dataset({str(root)!r}); ds.episode(2)",
             "b = ds.browse()\nb",
             "b.fr_slider.value = 1\nts = []\nfor t in range(2, 22):\n"
             "    t0 = time.perf_counter(); b.fr_slider.value = t; ts.append(time.perf_counter() - t0)\n"
             "t0 = time.perf_counter(); b.ep_slider.value = 2; te = time.perf_counter() - t0\n"
             "print(json.dumps({'median': statistics.median(ts), 'max': max(ts), 'episode': te}))",
             "ds.render(2, n_frames=3)",                      # the static figure as the cell's value: once
             "if True:\n    f = ds.render(1, n_frames=3)",   # not the cell's value (the papermill template): still once
             "f"]                                             # displayed again later: once
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbclient.NotebookClient(nb, kernel_name='python3', timeout=300,
                            resources={'metadata': {'path': str(Path(__file__).resolve().parent.parent)}}).execute()
    outs = nb.cells[1].outputs
    assert len(outs) == 1 and 'application/vnd.jupyter.widget-view+json' in outs[0]['data'], outs
    pngs = [sum('image/png' in o.get('data', {}) for o in c.outputs) for c in nb.cells]
    assert pngs == [0, 0, 0, 1, 1, 1], pngs  # no frozen copy of the browser's plot; render_episode shows exactly once
    stream = ''.join(o.get('text', '') for o in nb.cells[2].outputs if o['output_type'] == 'stream')
    r = json.loads(stream.strip().splitlines()[-1])
    print(f"\nframe step (Jupyter kernel): median {r['median'] * 1e3:.1f} ms, max {r['max'] * 1e3:.1f} ms; "
          f"episode change {r['episode']:.2f} s")
    assert r['median'] < 0.1


def test_inspect_stats_labels_dimensions(root, capsys):
    assert cli_inspect([str(root), '--stats']) == 0
    out = capsys.readouterr().out
    assert 'stats observation.state (25 dims)' in out
    for i, n in [(0, 'joint_0'), (24, 'joint_24')]: assert f'{i:3d}  {n} ' in out
    assert '  3  gripper ' in out and 'environment_state_16' in out
    assert cli_inspect([str(root), '--stats', '--json']) == 0
    st = json.loads(capsys.readouterr().out)['stats']
    assert st[STATE]['names'] == STATE_NAMES and st[ACTION]['names'] == MOTORS and st[ENV_STATE]['names'] == ENV_NAMES
    assert len(st[ACTION]['mean']) == 4


def test_inspect_check_flags_short_episode(root, capsys):
    f = [x for x in open_dataset(root).check() if x['code'] == 'suspiciously_short']
    assert len(f) == 1 and f[0]['level'] == 'warning' and f[0]['episodes'] == [1] and f[0]['lengths'] == [3]
    assert cli_inspect([str(root), '--check']) == 0  # a warning, not an error
    out = capsys.readouterr().out
    assert '[warning]' in out and 'episode (frames): 1 (3)' in out
