"""Clients defined outside robobench, used by tests/test_evaluation.py through 'tests.eval_clients:Name' specs
(the way a user's own module makes its clients available to process and Ray workers)."""
import os, signal
from pathlib import Path
import numpy as np
from robobench.clients import InferenceClient


@InferenceClient.register(client_name='test_pgain')
class PGain(InferenceClient):
    "Proportional controller for toy/Point."
    def __init__(self, gain: float = 5.0): self.gain = gain
    def infer(self, obs, instruction, return_viz=False): return np.clip(-self.gain * obs['state'], -1, 1), None
    def reset(self): pass


@InferenceClient.register(client_name='test_crash_once')
class CrashOnce(InferenceClient):
    "Kills its own worker process (like a simulator segfault) the first time any worker runs a second episode."
    def __init__(self, marker: str): self.marker, self.episodes = Path(marker), 0
    def infer(self, obs, instruction, return_viz=False): return np.clip(-5 * obs['state'], -1, 1), None
    def reset(self):
        self.episodes += 1
        if self.episodes == 2 and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGSEGV)


@InferenceClient.register(client_name='test_die_on_start')
class DieOnStart(InferenceClient):
    """Kills its worker while the worker is still starting (what a script without a __main__ guard does to spawned
    workers)."""
    def __init__(self): os.kill(os.getpid(), signal.SIGKILL)
    def infer(self, obs, instruction, return_viz=False): raise AssertionError('never reached')
    def reset(self): pass


def point_request(obs, instruction):
    "An obs_map for toy/Point: only the state, under the LeRobot name, and openpi's `prompt` for the instruction."
    return {'observation.state': np.asarray(obs['state'], np.float32), 'prompt': instruction or ''}

