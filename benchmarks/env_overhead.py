"""Steps/s through robobench's env adapter vs the raw simulator loop (same task, control mode, seed, actions).

    python benchmarks/env_overhead.py [--steps 300] [--rounds 5] [--image-steps 30]
        [--envs maniskill/PickCube-v1 robosuite/Lift aloha/TransferCube pusht/PushT]

Prints, per env, the median steps/s of each loop over alternating rounds and the ratio adapter/raw (goal >= 0.95).
Both loops run state-only (no camera rendering), reset every `max_steps` steps with the same seeds.

ALOHA and PushT are compared as time per step, robobench / raw (goal <= 1.05), at the same observation content:
- state only: the adapter with `render_images=False` (PushT: agent, block pose and keypoints) vs gym-pusht's
  `obs_type='state'` (agent + block pose; its keypoint obs is printed too), and for ALOHA vs the dm_control loop it
  runs on (gym-aloha's task without cameras: gym-aloha itself cannot step without rendering);
- state + `top` image: the adapter vs gym-aloha's `pixels_agent_pos` (480x640; it renders three cameras every
  step, see envs_aloha) and gym-pusht's `pixels_agent_pos` (96x96), over `--image-steps` steps. For ALOHA the
  dm_control loop rendering only `top` is printed too: the adapter's own overhead.
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


def raw_aloha(task):
    "gym-aloha's own env with `obs_type='pixels_agent_pos'` (the 480x640 `top` image + the 14 joint positions)."
    import gymnasium as gym, gym_aloha  # noqa: F401
    env = gym.make(f'gym_aloha/Aloha{task}-v0', obs_type='pixels_agent_pos')
    return env, (lambda seed: env.reset(seed=seed)), (lambda a: env.step(a)), env.close


def bare_aloha(task, image_size=None):
    "The dm_control loop gym-aloha runs on, with its task's cameras off: qpos + object poses (+ `top` at image_size)."
    from gym_aloha.tasks.sim import BOX_POSE
    from robobench.envs_aloha import ALOHA_TASKS, aloha_control_env, aloha_object_pose, aloha_task_class, blind_task
    env = aloha_control_env(ALOHA_TASKS[task]['xml'], blind_task(aloha_task_class(task))())
    def reset(seed):
        BOX_POSE[0] = aloha_object_pose(task, seed)
        env.reset()
    def step(a):
        ts = env.step(a)
        obs = (env.task.get_qpos(env.physics), env.task.get_env_state(env.physics), ts.reward)
        if image_size: obs += (env.physics.render(*image_size, camera_id='top'),)
        return obs
    return env, reset, step, env.physics.free


def raw_pusht(obs_type):
    "gym-pusht's PushT-v0 with `obs_type` 'state' or 'pixels_agent_pos' (96x96)."
    import warnings
    import gymnasium as gym
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
        import gym_pusht  # noqa: F401
    env = gym.make('gym_pusht/PushT-v0', obs_type=obs_type)
    return env, (lambda seed: env.reset(seed=seed)), (lambda a: env.step(a)), env.close


def loop(reset, step, actions, episode_len):
    t = time.perf_counter()
    for i, a in enumerate(actions):
        if i % episode_len == 0: reset(i // episode_len)
        step(a)
    return len(actions) / (time.perf_counter() - t)


def rounds(pairs, actions, episode_len, n_rounds):
    "Median steps/s of each (reset, step) loop in `pairs`, alternating the loops round by round after a warm-up."
    for reset, step in pairs: loop(reset, step, actions[:5], episode_len)
    rates = [[] for _ in pairs]
    for _ in range(n_rounds):
        for r, (reset, step) in zip(rates, pairs): r.append(loop(reset, step, actions, episode_len))
    return [statistics.median(r) for r in rates]


def bench_state_ratio(eid, spec, env, raw, steps, n_rounds):
    _, rreset, rstep, rclose = raw
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (steps, spec.action_dim)).astype(np.float32)
    ep = min(spec.max_steps, 50)
    m_raw, m_rb = rounds([(rreset, rstep), (env.reset, env.step)], actions, ep, n_rounds)
    print(f"{eid} ({spec.control_mode}, {steps} steps x {n_rounds} rounds): raw {m_raw:.0f} steps/s, "
          f"robobench {m_rb:.0f} steps/s, ratio {m_rb / m_raw:.3f} (goal >= 0.95)", flush=True)
    rclose()


def actions_for(spec, steps, seed=0):
    "Plausible actions: ALOHA joint targets around its start pose (grippers open), PushT targets on the table."
    rng = np.random.default_rng(seed)
    if spec.backend == 'aloha':
        from gym_aloha.constants import START_ARM_POSE
        start = np.r_[START_ARM_POSE[:6], 1, START_ARM_POSE[8:14], 1]
        return (start + rng.uniform(-0.3, 0.3, (steps, 14))).astype(np.float32)
    return rng.uniform(50, 450, (steps, 2)).astype(np.float32)


def bench_time_ratio(label, rb, raw, actions, episode_len, n_rounds, extra=None):
    "Print ms/step of robobench and raw loops (and `extra` (name, reset, step) loops) and the time ratio."
    pairs = [rb, raw] + ([extra[1:]] if extra else [])
    rates = rounds(pairs, actions, episode_len, n_rounds)
    ms = [1e3 / r for r in rates]
    line = (f"{label} ({len(actions)} steps x {n_rounds} rounds): robobench {ms[0]:.2f} ms/step, raw {ms[1]:.2f} "
            f"ms/step, time ratio robobench/raw {ms[0] / ms[1]:.3f} (goal <= 1.05)")
    if extra: line += f"; {extra[0]} {ms[2]:.2f} ms/step (robobench/that {ms[0] / ms[2]:.3f})"
    print(line, flush=True)


def bench_aloha(eid, steps, image_steps, n_rounds):
    from robobench.envs import make_env
    task = eid.split('/', 1)[1]
    env = make_env(eid, render_images=False)
    spec, ep = env.spec, env.spec.max_steps
    _, breset, bstep, bclose = bare_aloha(task)
    bench_time_ratio(f'{eid} state only vs dm_control loop', (env.reset, env.step), (breset, bstep),
                     actions_for(spec, steps), ep, n_rounds)
    bclose()
    env.close()
    env = make_env(eid)   # state + top at gym-aloha's 480x640
    _, rreset, rstep, rclose = raw_aloha(task)
    _, b1reset, b1step, b1close = bare_aloha(task, tuple(env.spec.cameras['top']))
    bench_time_ratio(f'{eid} state + top 480x640 vs gym-aloha pixels_agent_pos', (env.reset, env.step),
                     (rreset, rstep), actions_for(spec, image_steps), ep, n_rounds,
                     extra=('dm_control loop + top only', b1reset, b1step))
    rclose(); b1close(); env.close()


def bench_pusht(eid, steps, image_steps, n_rounds):
    from robobench.envs import make_env
    env = make_env(eid, render_images=False)
    spec, ep = env.spec, env.spec.max_steps
    _, rreset, rstep, rclose = raw_pusht('state')
    _, kreset, kstep, kclose = raw_pusht('environment_state_agent_pos')
    bench_time_ratio(f'{eid} state only vs gym-pusht state', (env.reset, env.step), (rreset, rstep),
                     actions_for(spec, steps), ep, n_rounds,
                     extra=('gym-pusht environment_state_agent_pos (keypoints)', kreset, kstep))
    rclose(); kclose(); env.close()
    env = make_env(eid)
    _, rreset, rstep, rclose = raw_pusht('pixels_agent_pos')
    bench_time_ratio(f'{eid} state + top 96x96 vs gym-pusht pixels_agent_pos', (env.reset, env.step),
                     (rreset, rstep), actions_for(spec, image_steps), ep, n_rounds)
    rclose(); env.close()


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument('--steps', type=int, default=300)
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--image-steps', type=int, default=30, help='steps per round of the loops that render images')
    p.add_argument('--envs', nargs='+',
                   default=['maniskill/PickCube-v1', 'robosuite/Lift', 'aloha/TransferCube', 'pusht/PushT'])
    a = p.parse_args(argv)
    from robobench.envs import make_env
    for eid in a.envs:
        backend, task = eid.split('/', 1)
        if backend == 'aloha':
            bench_aloha(eid, a.steps, a.image_steps, a.rounds)
            continue
        if backend == 'pusht':
            bench_pusht(eid, a.steps, max(a.image_steps, 100), a.rounds)
            continue
        env = make_env(eid, cameras=[], render_images=False)
        spec = env.spec
        raw = (raw_maniskill(task, spec.control_mode) if backend == 'maniskill'
               else raw_robosuite(task, spec.control_mode))
        bench_state_ratio(eid, spec, env, raw, a.steps, a.rounds)
        env.close()


if __name__ == '__main__':
    main()
