"""Shared pytest setup: offline hub, headless rendering, markers."""
import os, sys
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('MUJOCO_GL', 'egl')
os.environ.setdefault('PYOPENGL_PLATFORM', 'egl')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('WANDB_MODE', 'disabled')

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: takes more than a few seconds (CI still runs it)')
    config.addinivalue_line('markers', 'sim: starts a real simulator (ManiSkill3 or robosuite) on CPU')
    config.addinivalue_line('markers', 'net: opens real sockets on 127.0.0.1')
