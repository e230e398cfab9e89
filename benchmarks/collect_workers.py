"""`robobench collect --workers N` vs `--workers 1`: episodes per minute on a real simulator, measured in one run.

Goal (issue 24): 2 workers >= 1.7x the episodes per minute of 1 worker on a 2-core machine. Each run is the real
command, `robobench collect ... --workers N`, in a fresh process (cold imports, as a user runs it). Both runs write
the same dataset (same seeds, one writer in seed order); the script checks that too. Two rates are printed per run:
end to end (the command's whole wall time: imports, the workers' start-up, writing) and steady state (between the
first and the last episode the writer saved, from a thread watching its ledger), since start-up is a fixed cost
(about 4 s here either way) that a long collect amortizes: the end-to-end ratio grows with --episodes.

usage: .venv/bin/python benchmarks/collect_workers.py [--env maniskill/PickCube-v1] [--episodes 300] [--workers 2]
Ratios only mean something on an otherwise idle machine: say how loaded it was when you report them.
"""
import argparse, os, shutil, subprocess, sys, tempfile, threading, time
from pathlib import Path
from robobench.collect import EPISODES_FILE
from robobench.core import read_jsonl


def run(env_id: str, episodes: int, workers: int, root: Path) -> dict:
    out = root / f'w{workers}'
    shutil.rmtree(out, ignore_errors=True)
    seen, stop = [], threading.Event()   # (time, attempts in the ledger) whenever the count changes
    def watch():
        while not stop.is_set():
            path = out / EPISODES_FILE
            n = sum(1 for _ in path.open()) if path.exists() else 0
            if n and (not seen or n != seen[-1][1]): seen.append((time.perf_counter(), n))
            time.sleep(0.05)
    th = threading.Thread(target=watch, daemon=True); th.start()
    t0 = time.perf_counter()
    cmd = [str(Path(sys.executable).parent / 'robobench'), 'collect', '--env', env_id, '--episodes', str(episodes),
           '--out', str(out), '--workers', str(workers)]
    try: r = subprocess.run(cmd, capture_output=True, text=True)
    finally: stop.set(); th.join()
    dt = time.perf_counter() - t0
    if r.returncode != 0: raise SystemExit(f'{" ".join(cmd)} failed ({r.returncode}): {r.stderr[-2000:]}')
    recs = read_jsonl(out / EPISODES_FILE)
    (ta, na), (tb, nb) = (seen[0], seen[-1]) if seen else ((0, 0), (0, 0))
    steady = (nb - na) / (tb - ta) * 60 if tb > ta else float('nan')
    return {'attempts': len(recs), 'epm': len(recs) / dt * 60, 'steady_epm': steady, 's': dt,
            'seeds': [r['seed'] for r in recs], 'out': out}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--env', default='maniskill/PickCube-v1')
    ap.add_argument('--episodes', type=int, default=300)
    ap.add_argument('--workers', type=int, default=2)
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix='collect_workers_'))
    one = run(a.env, a.episodes, 1, root)
    many = run(a.env, a.episodes, a.workers, root)
    assert one['seeds'] == many['seeds'], 'the datasets differ in their seeds'
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    print(f"env {a.env}, {a.episodes} successful episodes ({one['attempts']} attempts), {os.cpu_count()} CPUs, "
          f"load average {load:.1f}")
    for name, r in (('1 worker', one), (f'{a.workers} workers', many)):
        print(f"  {name:10s}: {r['epm']:7.1f} episodes/min end to end ({r['s']:.1f} s), "
              f"{r['steady_epm']:7.1f} episodes/min steady")
    print(f"ratio {a.workers} workers / 1 worker: {many['epm'] / one['epm']:.2f}x end to end, "
          f"{many['steady_epm'] / one['steady_epm']:.2f}x steady (goal >= 1.7x with 2 workers)")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
    main()
