"""A real browser on a real JupyterLab: headless Chromium (Debian's `chromium` + `chromium-driver`, installed by
`make setup`) driven by Selenium. A signed papermill run plays its inline rollout video and an unsigned copy of the same
notebook does not (JupyterLab strips `data:` sources from untrusted outputs); the triage gallery and the episode
browser render as live widgets and answer the UI (seed dropdown, frame slider moved with the arrow keys)."""
import contextlib, importlib.util, json, os, shutil, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest
import nbformat
from nbformat.v4 import new_code_cell, new_notebook
from robobench.core import free_port

pytestmark = [pytest.mark.slow, pytest.mark.net, pytest.mark.timeout(300)]

JUPYTER = str(Path(sys.executable).parent / 'jupyter')
SETUP = 'run `make setup` (scripts/setup_system.sh installs the Debian packages chromium and chromium-driver)'
DONE = 'cells done', 6 * 7       # printed by the last cell; its text ('cells done 42') is not in any cell's source


def _tools():
    "chromium and chromedriver: CI installs them through `make setup`, so a missing one is a failure, not a skip."
    found = {c: shutil.which(c) for c in ('chromium', 'chromedriver')}
    missing = [c for c, p in found.items() if p is None]
    if missing: pytest.fail(f"{' and '.join(missing)} not found on PATH: {SETUP}", pytrace=False)
    if importlib.util.find_spec('selenium') is None:
        pytest.fail('selenium is not installed in the venv: run `make setup` (it is in requirements.lock)',
                    pytrace=False)
    return found


def _wait(cond, timeout: float, what: str, interval: float = 0.25):
    "Poll `cond()` until it returns something truthy; AssertionError naming `what` (and the last value) on timeout."
    t0, last = time.time(), None
    while time.time() - t0 < timeout:
        last = cond()
        if last: return last
        time.sleep(interval)
    raise AssertionError(f'timed out after {timeout:.0f} s waiting for {what} (last: {last!r})')


class Lab:
    def __init__(self, proc, port, root, log):
        self.proc, self.port, self.root, self.log = proc, port, root, log
    def url(self, rel) -> str: return f'http://127.0.0.1:{self.port}/lab/tree/{Path(rel).as_posix()}?reset'
    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors='replace')[-n:] if self.log.exists() else ''


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    """`jupyter lab` on a free port over a temp notebook dir, with its own config / data / runtime dirs. The data dir
    (where the notary's signature db lives) is set for this process too, so `robobench.runs.run` signs into the db
    the server checks; the kernelspecs still come from the venv (`robobench`)."""
    _tools()
    base = tmp_path_factory.mktemp('lab')
    dirs = {k: base / k for k in ('config', 'data', 'runtime', 'nb')}
    for d in dirs.values(): d.mkdir()
    # no "get notified about Jupyter news?" toast over the outputs
    (dirs['config'] / 'labconfig').mkdir()
    (dirs['config'] / 'labconfig' / 'page_config.json').write_text(
        json.dumps({'disabledExtensions': {'@jupyterlab/apputils-extension:announcements': True}}))
    mp = pytest.MonkeyPatch()
    mp.setenv('JUPYTER_CONFIG_DIR', str(dirs['config'])); mp.setenv('JUPYTER_DATA_DIR', str(dirs['data']))
    mp.setenv('JUPYTER_RUNTIME_DIR', str(dirs['runtime'])); mp.delenv('ROBOBENCH_SIGN_NOTEBOOKS', raising=False)
    port, log = free_port(), base / 'lab.log'
    cmd = [JUPYTER, 'lab', '--no-browser', '--ServerApp.ip=127.0.0.1', f'--port={port}', '--ServerApp.port_retries=0',
           "--ServerApp.token=", "--ServerApp.password=", f"--ServerApp.root_dir={dirs['nb']}",
           '--LabApp.expose_app_in_browser=True']          # window.jupyterapp: run commands, read kernel state
    if os.geteuid() == 0: cmd.append('--allow-root')
    with open(log, 'w') as f: proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=dirs['nb'])
    try:
        def up():
            assert proc.poll() is None, f'jupyter lab exited ({proc.returncode}):\n{log.read_text()[-3000:]}'
            try: return urllib.request.urlopen(f'http://127.0.0.1:{port}/api/status', timeout=2).status == 200
            except OSError: return False
        _wait(up, 60, 'jupyter lab to answer /api/status')
        yield Lab(proc, port, dirs['nb'], log)
    finally:
        proc.terminate()                                   # the server shuts its kernels down on SIGTERM
        try: proc.wait(timeout=20)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait()
        mp.undo()


@pytest.fixture(scope='module')
def driver(lab):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    tools = _tools()
    opts = webdriver.ChromeOptions()
    opts.binary_location = tools['chromium']
    for a in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--window-size=1400,1000',
              '--mute-audio', '--autoplay-policy=no-user-gesture-required'):
        opts.add_argument(a)
    drv = webdriver.Chrome(options=opts, service=Service(tools['chromedriver']))
    try:
        drv.set_script_timeout(20)
        yield drv
    finally:
        drv.quit()


@contextlib.contextmanager
def screenshots(drv, lab, folder: Path, name: str):
    "Run a browser step; on any failure save a screenshot under `folder` and name it (and the lab log) in the error."
    try: yield
    except Exception as e:
        shot = folder / f'{name}-failure.png'
        try: drv.save_screenshot(str(shot))
        except Exception as se: shot = f'(no screenshot: {se})'
        kept = sorted(str(p) for p in folder.glob('*.png'))
        raise AssertionError(f'{type(e).__name__}: {e}\nscreenshots: {kept or shot}\njupyter lab log: {lab.log}\n'
                             f'{lab.log_tail(1500)}') from e


# JavaScript run in the page; `panel()` is the notebook in the main area.
PANEL = 'const panel = () => window.jupyterapp && window.jupyterapp.shell.currentWidget;'

def open_notebook(drv, lab, rel, timeout=60):
    "Open `rel` in a fresh workspace and wait until JupyterLab shows it with its outputs rendered."
    drv.get(lab.url(rel))
    def shown():
        return drv.execute_script(PANEL + """const p = panel();
            if (!p || !p.context || p.context.path !== arguments[0] || !p.context.isReady) return null;
            return p.node.querySelectorAll('.jp-Cell').length;""", Path(rel).as_posix())
    _wait(shown, timeout, f'JupyterLab to open {rel}')


def videos(drv):
    "State of every <video> in the current notebook's outputs."
    return drv.execute_script(PANEL + """return Array.from(panel().node.querySelectorAll('.jp-OutputArea-output video'))
      .map(v => ({
        readyState: v.readyState, networkState: v.networkState, currentSrc: (v.currentSrc || '').slice(0, 30),
        sources: [v.getAttribute('src'), ...Array.from(v.querySelectorAll('source')).map(s => s.getAttribute('src'))]
                 .filter(s => s).map(s => s.slice(0, 30))}));""")


def kick_videos(drv):
    "Ask every output video to play, muted (what a user's click on play does)."
    drv.execute_script(PANEL + """panel().node.querySelectorAll('.jp-OutputArea-output video').forEach(v => {
        v.muted = true; if (v.readyState === 0 && v.networkState !== 3) v.load(); v.play().catch(() => {}); });""")


def show_first_video(drv):
    drv.execute_script(PANEL + """const v = panel().node.querySelector('.jp-OutputArea-output video');
        if (v) v.scrollIntoView({block: 'center'});"""); time.sleep(0.3)


def cells_trusted(drv):
    return drv.execute_script(PANEL + """const cells = panel().content.widgets.filter(c => c.model.type === 'code');
        return cells.map(c => !!c.model.trusted);""")


def test_signed_run_plays_its_video_and_an_unsigned_copy_does_not(lab, driver, tmp_path):
    from nbformat.sign import NotebookNotary
    from robobench.runs import run
    r = run('evaluate', {'ENV': 'toy/Point', 'CLIENT': 'scripted', 'EPISODES': 2, 'SHOW_VIDEOS': 1}, name='browser',
            root=lab.root / 'runs')
    assert r.status == 'done', r.error
    assert json.loads((r.run_dir / 'status.json').read_text())['signed'] is True
    text = r.notebook.read_text()
    assert '<video' in text and 'data:video/mp4;base64,' in text    # the inline video is in the executed notebook
    # the same notebook with one metadata key added: identical outputs, but its signature is no longer in the db
    nb = nbformat.read(str(r.notebook), as_version=4); nb.metadata['robobench_test'] = 'unsigned copy'
    unsigned = lab.root / 'unsigned.ipynb'; nbformat.write(nb, str(unsigned))
    assert NotebookNotary().check_signature(nbformat.read(str(r.notebook), as_version=4))
    assert not NotebookNotary().check_signature(nbformat.read(str(unsigned), as_version=4))

    with screenshots(driver, lab, tmp_path, 'signed'):
        open_notebook(driver, lab, r.notebook.relative_to(lab.root))
        _wait(lambda: videos(driver), 30, 'a <video> in the outputs of the signed run')
        def playing():
            vs = videos(driver)
            if not any(v['readyState'] >= 2 for v in vs): kick_videos(driver); return None
            return vs
        vs = _wait(playing, 20, 'the signed run\'s inline video to reach readyState >= 2 (HAVE_CURRENT_DATA)')
        assert any(v['currentSrc'].startswith('data:video/mp4') for v in vs), vs
        assert all(cells_trusted(driver)), 'JupyterLab does not trust the signed notebook\'s cells'
        show_first_video(driver)
        driver.save_screenshot(str(tmp_path / 'signed-run.png'))

    with screenshots(driver, lab, tmp_path, 'unsigned'):
        open_notebook(driver, lab, unsigned.relative_to(lab.root))
        vs = _wait(lambda: videos(driver), 30, 'the (empty) <video> in the outputs of the unsigned copy')
        kick_videos(driver); time.sleep(2)
        vs = videos(driver)
        assert all(v['readyState'] == 0 and not v['sources'] and not v['currentSrc'] for v in vs), \
            f'the unsigned copy has a playable video source, so signing is not what makes the signed run play: {vs}'
        assert not any(cells_trusted(driver))
        show_first_video(driver)
        driver.save_screenshot(str(tmp_path / 'unsigned-copy.png'))


WIDGETS_NB = [
    "import robobench as rb\n"
    "res = rb.evaluate('toy/Point', 'scripted', 3, run_folder='run', progress=False)\n"
    "gallery = rb.browse_episodes(res)\n"
    "gallery",
    "rb.collect('toy/Point', 2, 'ds', cameras=['top'], progress=False)\n"
    "ds = rb.open_dataset('ds')\n"
    "browser = ds.browse()\n"
    "browser",
    f"print({DONE[0]!r}, 6 * 7)",
]

# pixels of an <img> (a blob: URL, same origin) hashed, so "the frame changed" means the picture changed
IMG_HASH = """const img = arguments[0]; if (!img.complete || !img.naturalWidth) return null;
    const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
    const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0); const d = ctx.getImageData(0, 0, c.width, c.height).data;
    let h = 0; for (let i = 0; i < d.length; i++) h = (Math.imul(h, 31) + d[i]) >>> 0; return [img.src, h];"""


def test_gallery_and_episode_browser_render_and_react(lab, driver, tmp_path):
    from jupyter_client.kernelspec import KernelSpecManager
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select
    spec = KernelSpecManager().get_kernel_spec('robobench')       # the venv's kernel (`make setup` installs it)
    folder = lab.root / 'widgets'; folder.mkdir()
    nb = new_notebook(cells=[new_code_cell(s) for s in WIDGETS_NB],
                      metadata={'kernelspec': {'name': 'robobench', 'display_name': spec.display_name,
                                               'language': 'python'}})
    nbformat.write(nb, str(folder / 'widgets.ipynb'))

    with screenshots(driver, lab, tmp_path, 'widgets'):
        open_notebook(driver, lab, 'widgets/widgets.ipynb')
        def kernel_idle():
            s = driver.execute_script(PANEL + """const p = panel(), sc = p.sessionContext,
                    k = sc.session && sc.session.kernel;
                const dialog = document.querySelector('.jp-Dialog');
                return {name: k ? k.name : null, status: k ? k.status : null,
                        dialog: dialog ? dialog.innerText : null};""")
            assert not s['dialog'], f"JupyterLab asks: {s['dialog']!r} (is the robobench kernel installed? {SETUP})"
            return s if s['status'] == 'idle' else None
        k = _wait(kernel_idle, 60, 'the notebook\'s kernel to start')
        assert k['name'] == 'robobench', k
        # Run > Run All Cells, through the application's command registry (what the menu item calls)
        driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")
        def finished():
            s = driver.execute_script(PANEL + """
                const outs = Array.from(panel().node.querySelectorAll('.jp-OutputArea-output'));
                const err = outs.filter(o => o.matches('[data-mime-type="application/vnd.jupyter.error"]') ||
                                             o.querySelector('[data-mime-type="application/vnd.jupyter.error"]'));
                return {text: outs.map(o => o.textContent).join('\\n'),
                        error: err.map(o => o.textContent).join('\\n')};""")
            assert not s['error'], f"a cell raised:\n{s['error'][-3000:]}"
            return f'{DONE[0]} {DONE[1]}' in s['text']
        _wait(finished, 120, 'all cells to run (the last one prints "cells done 42")', interval=0.5)

        def widgets_settled():
            t = driver.execute_script(PANEL + 'return panel().content.node.innerText;')
            return not any(s in t for s in ('Loading widget', 'Error displaying widget'))
        _wait(widgets_settled, 15, 'no "Loading widget" / "Error displaying widget" text in the outputs')
        # a widget view that throws while rendering shows "Click to show javascript error."; a click reveals the error
        broken = driver.execute_script(PANEL + """return Array.from(
            panel().node.querySelectorAll('.jupyter-widgets-error-widget'))
            .map(e => { e.parentElement.click(); return e.innerText; });""")
        assert not broken, 'widget views failed to render in the browser:\n' + '\n'.join(broken)
        driver.save_screenshot(str(tmp_path / 'widgets-rendered.png'))

        # the triage gallery: its seed dropdown holds the run's 3 seeds with one picked;
        # picking another shows its record
        sel = driver.find_element(By.CSS_SELECTOR, '.jp-NotebookPanel:not(.lm-mod-hidden) .widget-dropdown select')
        driver.execute_script('arguments[0].scrollIntoView({block: "center"});', sel)
        dd = Select(sel)
        assert sel.get_attribute('value') and len(dd.options) == 3, [o.text for o in dd.options]
        assert dd.first_selected_option.text.startswith('seed 0'), dd.first_selected_option.text
        gallery = sel.find_element(By.XPATH, './ancestor::div[contains(@class, "widget-vbox")][last()]')
        _wait(lambda: '"seed": 0' in gallery.text, 10, 'the gallery to show seed 0\'s record')
        plot = gallery.find_element(By.CSS_SELECTOR, 'img.widget-image')        # the action plot (a PNG widget)
        plot0 = _wait(lambda: driver.execute_script(IMG_HASH, plot), 10, 'the gallery\'s action plot')
        dd.select_by_index(1)
        _wait(lambda: '"seed": 1' in gallery.text, 15, 'the gallery to show seed 1\'s record after picking it')
        _wait(lambda: (h := driver.execute_script(IMG_HASH, plot)) and h[1] != plot0[1], 15,
              'the gallery\'s action plot to change after picking seed 1')
        def gallery_video():
            v = driver.execute_script("""const v = arguments[0].querySelector('video'); if (!v) return null;
                if (v.readyState < 2) { v.muted = true; v.play().catch(() => {}); } return v.readyState;""", gallery)
            return v if v and v >= 2 else None
        _wait(gallery_video, 15, 'the gallery\'s video (a widget, blob: source) to reach readyState >= 2')
        driver.save_screenshot(str(tmp_path / 'gallery.png'))

        # the episode browser: move its frame slider with the arrow key and watch the camera image change
        label = driver.find_element(
            By.XPATH, '//div[contains(@class, "jp-NotebookPanel") and not(contains(@class, "lm-mod-hidden"))]'
                      '//div[contains(@class, "widget-slider")][label[normalize-space()="frame"]]')
        handle = label.find_element(By.CSS_SELECTOR, '.noUi-handle')
        browser = label.find_element(By.XPATH, './ancestor::div[contains(@class, "widget-vbox")][last()]')
        img = browser.find_element(By.CSS_SELECTOR, 'img.widget-image')
        driver.execute_script('arguments[0].scrollIntoView({block: "center"});', img)
        before = _wait(lambda: driver.execute_script(IMG_HASH, img), 10, 'the episode browser\'s camera image')
        assert handle.get_attribute('aria-valuenow') in ('0', '0.0'), handle.get_attribute('aria-valuenow')
        handle.send_keys(Keys.ARROW_RIGHT)
        _wait(lambda: float(handle.get_attribute('aria-valuenow')) == 1, 10, 'the frame slider to move to 1')
        after = _wait(lambda: (h := driver.execute_script(IMG_HASH, img)) and h[1] != before[1] and h, 15,
                      f'the camera image to change after the frame slider moved (before: {before})')
        assert after[0] != before[0], (before, after)          # a new image value came back from the kernel
        driver.save_screenshot(str(tmp_path / 'episode-browser.png'))


def _video_meta(drv, scope_js: str):
    "[{readyState, duration}] of the <video>s found by `scope_js` (an expression giving a node list), asked to load."
    return drv.execute_script(PANEL + f"""return Array.from({scope_js}).map(v => {{
        v.muted = true; if (v.readyState === 0 && v.networkState !== 3) v.load(); v.play().catch(() => {{}});
        return {{readyState: v.readyState, duration: v.duration}}; }});""")


def test_aloha_inline_video_lasts_steps_over_env_fps_and_a_cli_report_plays(lab, driver, tmp_path):
    """An executed ALOHA evaluation (50 Hz) plays its inline video for steps / fps seconds (not at mediapy's 20 fps);
    the report.html of a `robobench eval` run plays its embedded video in Chromium."""
    from robobench.cli import main
    from robobench.core import read_jsonl
    from robobench.runs import run
    r = run('evaluate', {'ENV': 'aloha/TransferCube', 'CLIENT': 'random', 'EPISODES': 1, 'MAX_STEPS': 30,
                         'ENV_KWARGS': {'fast_render': True}, 'SHOW_VIDEOS': 1}, name='aloha', root=lab.root / 'runs')
    assert r.status == 'done', r.error
    (rec,) = read_jsonl(r.run_dir / 'episodes.jsonl')
    fps = 50.0                                                      # gym-aloha's control rate
    assert rec['video_fps'] == fps and rec['length'] == 30
    with screenshots(driver, lab, tmp_path, 'aloha'):
        open_notebook(driver, lab, r.notebook.relative_to(lab.root))
        scope = "panel().node.querySelectorAll('.jp-OutputArea-output video')"
        vs = _wait(lambda: (m := _video_meta(driver, scope)) and all(v['readyState'] >= 1 for v in m) and m, 30,
                   'the ALOHA run\'s inline video to load its metadata')
        (v,) = vs
        assert abs(v['duration'] - rec['length'] / fps) <= 1.5 / fps, (v, rec['length'], fps)   # 0.6 s, not 1.5 s
        show_first_video(driver)
        driver.save_screenshot(str(tmp_path / 'aloha-run.png'))

    cli_run = tmp_path / 'cli_eval'
    assert main(['eval', '-e', 'toy/Point', '--policy.client', 'random', '--episodes', '1', '--max-steps', '6',
                 '--run-folder', str(cli_run)]) == 0
    with screenshots(driver, lab, tmp_path, 'report'):
        driver.get((cli_run / 'report.html').as_uri())               # as a user opens it: the file, no server
        def report_video():
            m = driver.execute_script("""return Array.from(document.querySelectorAll('video')).map(v => {
                v.muted = true; v.play().catch(() => {}); return {readyState: v.readyState, duration: v.duration,
                src: (v.currentSrc || '').slice(0, 15)}; });""")
            return m if m and all(v['readyState'] >= 2 for v in m) else None
        vs = _wait(report_video, 20, 'report.html\'s video to reach readyState >= 2 (HAVE_CURRENT_DATA)')
        assert len(vs) == 1 and vs[0]['src'].startswith('data:video/mp4') and vs[0]['duration'] > 0, vs
        driver.save_screenshot(str(tmp_path / 'cli-report.png'))


def test_quickstart_notebook_shows_no_stderr_box(lab, driver, tmp_path):
    """The quickstart executed by `robobench run` (reduced: the toy env, a few ACT steps; the same LeRobot training,
    policy server and websocket evaluation) has no stderr output: JupyterLab draws no pink box."""
    from robobench.runs import run
    r = run('quickstart', {'ENV': 'toy/Point', 'DEMOS': 4, 'TRAINING_STEPS': 20, 'BATCH_SIZE': 8,
                           'POLICY_KWARGS': {'dim_model': 16, 'dim_feedforward': 32, 'n_heads': 2, 'use_vae': False},
                           'ACTION_CHUNK_SIZE': 5, 'N_ACTION_STEPS': 5, 'EVAL_EPISODES': 2, 'VIDEO_EPISODES': 1,
                           'SHOW_VIDEOS': 1}, name='quiet', root=lab.root / 'runs')
    assert r.status == 'done', r.error
    nb = json.loads(r.notebook.read_text())
    stderr = [o.get('text') for c in nb['cells'] for o in c.get('outputs', []) if o.get('name') == 'stderr']
    assert not stderr, stderr
    with screenshots(driver, lab, tmp_path, 'quickstart'):
        open_notebook(driver, lab, r.notebook.relative_to(lab.root))
        # JupyterLab renders only the cells near the viewport: read every cell's output models (what it draws from)
        # and the output areas drawn so far
        def outputs():
            return driver.execute_script(PANEL + """const p = panel(); if (!p || !p.content) return null;
                const models = p.content.widgets.filter(c => c.model.type === 'code').flatMap(c => {
                    const o = c.model.outputs; return Array.from({length: o.length}, (_, i) => o.get(i).toJSON()); });
                const sel = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]';
                return models.length ? {outputs: models.length,
                    stderr: models.filter(o => o.output_type === 'stream' && o.name === 'stderr').map(o => o.text),
                    boxes: Array.from(p.node.querySelectorAll(sel)).map(o => o.textContent.slice(0, 300))} : null;""")
        counts = _wait(outputs, 30, 'the quickstart\'s outputs')
        assert counts['outputs'] > 3 and counts['stderr'] == [] and counts['boxes'] == [], counts
        driver.save_screenshot(str(tmp_path / 'quickstart.png'))
