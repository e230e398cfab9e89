"""Steps/s through robobench's env adapter vs the raw simulator loop (same task, control mode, seed, actions).

    python benchmarks/env_overhead.py [--steps 300] [--rounds 5] [--envs maniskill/PickCube-v1 robosuite/Lift]

Prints, per env, the median steps/s of each loop over alternating rounds and the ratio adapter/raw (goal >= 0.95).
Both loops run state-only (no camera rendering), reset every `max_steps` steps with the same seeds.
"""
import argparse, os, statistics, time
os.environ.setdefault('MUJOCO_GL', 'egl')
import numpy as np


def raw_maniskill(task, control_mode):
    import gymnasium as gym, mani_skill.envs  # noqa: F401
    env = gym.make(task, obs_mode='state_dict', control_mode=control_mode, sim_backend='cpu', num_envs=1,
                   render_mode='rgb_array')
    return env, (lambda seed: env.reset(seed=seed)), (lambda a: env.step(a)), env.close


def raw_robosuite(task, controller):
    import robosuite as suite
    from robobench.envs_robosuite import controller_config
    env = suite.make(task, robots='Panda', controller_configs=controller_config(controller), has_renderer=False,
                     has_offscreen_renderer=True, use_camera_obs=False, reward_shaping=False, control_freq=20,
                     horizon=10**6, ignore_done=True, hard_reset=False, seed=0)
    def reset(seed):
        env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        return env.reset()
    return env, reset, (lambda a: env.step(a)), env.close


def loop(reset, step, actions, episode_len):
    t = time.perf_counter()
    for i, a in enumerate(actions):
        if i % episode_len == 0: reset(i // episode_len)
        step(a)
    return len(actions) / (time.perf_counter() - t)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument('--steps', type=int, default=300)
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--envs', nargs='+', default=['maniskill/PickCube-v1', 'robosuite/Lift'])
    a = p.parse_args(argv)
    from robobench.envs import make_env
    for eid in a.envs:
        env = make_env(eid, cameras=[], render_images=False)
        spec = env.spec
        backend, task = eid.split('/', 1)
        raw, rreset, rstep, rclose = (raw_maniskill(task, spec.control_mode) if backend == 'maniskill'
                                      else raw_robosuite(task, spec.control_mode))
        rng = np.random.default_rng(0)
        actions = rng.uniform(-1, 1, (a.steps, spec.action_dim)).astype(np.float32)
        ep = min(spec.max_steps, 50)
        loop(rreset, rstep, actions[:20], ep); loop(env.reset, env.step, actions[:20], ep)  # warm-up
        r_raw, r_rb = [], []
        for _ in range(a.rounds):
            r_raw.append(loop(rreset, rstep, actions, ep))
            r_rb.append(loop(env.reset, env.step, actions, ep))
        m_raw, m_rb = statistics.median(r_raw), statistics.median(r_rb)
        print(f"{eid} ({spec.control_mode}, {a.steps} steps x {a.rounds} rounds): raw {m_raw:.0f} steps/s, "
              f"robobench {m_rb:.0f} steps/s, ratio {m_rb / m_raw:.3f} (goal >= 0.95)", flush=True)
        env.close(); rclose()


if __name__ == '__main__':
    main()
