"""What a person sees of an evaluation: which episodes keep a video, what the gallery opens on, what show() says."""
import numpy as np
from robobench.evaluation import evaluate
from robobench.viz import browse_episodes, show_episodes, select_episodes


class _Gain:
    "Proportional controller for toy/Point: with gain 1.5 and 8 steps, seeds 0..5 give 3 successes and 3 failures."
    rerender = True
    def reset(self): pass
    def infer(self, obs, instruction, return_viz=False): return np.clip(-1.5 * obs['state'], -1, 1), None


def test_default_videos_every_failure_and_some_successes(tmp_path):
    res = evaluate('toy/Point', _Gain(), episodes=6, max_steps=8, run_folder=tmp_path, progress=False,
                   video_successes=1)
    fails, wins = select_episodes(res, 'failure'), select_episodes(res, 'success')
    assert len(fails) == 3 and len(wins) == 3
    assert all(r.get('video') for r in fails)                        # every failure has its video
    assert sum(bool(r.get('video')) for r in wins) == 1              # and one success
    names = sorted(p.name for p in (tmp_path / 'videos').iterdir())
    assert len(names) == 4 and sum(n.startswith('failure_') for n in names) == 3


def test_gallery_opens_on_a_failure_and_show_says_what_has_no_video(tmp_path, capsys):
    res = evaluate('toy/Point', _Gain(), episodes=6, max_steps=8, run_folder=tmp_path, progress=False, video_episodes=2)
    g = browse_episodes(res)
    outcome, seed = g.children[1], g.children[2]
    fails = select_episodes(res, 'failure')
    assert outcome.value == 'failure' and seed.value is not None and seed.value in [r['seed'] for r in fails]
    assert [label for label, _ in outcome.options][1] == f'failure ({len(fails)})'
    missing = [r for r in fails if not r.get('video')]
    assert missing and all('no video' in lbl for lbl, s in seed.options if s in [r['seed'] for r in missing])
    shown = show_episodes(res, 'failure')
    out = capsys.readouterr().out
    assert f'{len(missing)} failure episodes have no video' in out and 'first 2 seeds' in out
    assert len(shown) == len(fails) - len(missing)
