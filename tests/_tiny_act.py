"""A tiny LeRobot ACT checkpoint (state + environment_state, CPU) for the server/client tests, and LeRobot's own
answer."""
from pathlib import Path
import numpy as np

STATE_DIM, ENV_DIM, ACTION_DIM, CHUNK, N_STEPS = 4, 6, 3, 5, 3


def make_tiny_act(d, **act_kw) -> Path:
    """Build, save (policy + pre/post-processors) and return a tiny random-init ACT checkpoint dir (`act_kw` override
    ACTConfig)."""
    import torch
    from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.act.modeling_act import ACTPolicy
    cfg = ACTConfig(input_features={'observation.state': PolicyFeature(FeatureType.STATE, (STATE_DIM,)),
                                    'observation.environment_state': PolicyFeature(FeatureType.ENV, (ENV_DIM,))},
                    output_features={'action': PolicyFeature(FeatureType.ACTION, (ACTION_DIM,))},
                    **{'chunk_size': CHUNK, 'n_action_steps': N_STEPS, 'dim_model': 32, 'dim_feedforward': 64,
                       'n_heads': 2, 'n_encoder_layers': 1, 'n_decoder_layers': 1, 'latent_dim': 8,
                       'n_vae_encoder_layers': 1, 'pretrained_backbone_weights': None, 'device': 'cpu', **act_kw})
    cfg.normalization_mapping = {**cfg.normalization_mapping, 'ENV': NormalizationMode.MEAN_STD}
    torch.manual_seed(0)
    policy = ACTPolicy(cfg)
    stats = {'observation.state': {'mean': torch.linspace(-1, 1, STATE_DIM), 'std': torch.full((STATE_DIM,), 2.0)},
             'observation.environment_state': {'mean': torch.ones(ENV_DIM), 'std': torch.full((ENV_DIM,), 0.5)},
             'action': {'mean': torch.tensor([0.5, -0.5, 0.0]), 'std': torch.tensor([0.1, 0.2, 0.3])}}
    return _save(cfg, policy, stats, d)


def _save(cfg, policy, stats, d) -> Path:
    from lerobot.policies.factory import make_pre_post_processors
    pre, post = make_pre_post_processors(cfg, dataset_stats=stats)
    d = Path(d)
    policy.save_pretrained(d); pre.save_pretrained(d); post.save_pretrained(d)
    return d


def make_tiny_diffusion(d, n_obs_steps: int = 2) -> Path:
    "A tiny random-init Diffusion Policy checkpoint with an observation history (LeRobot's default n_obs_steps=2)."
    import torch
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    cfg = DiffusionConfig(input_features={'observation.state': PolicyFeature(FeatureType.STATE, (STATE_DIM,)),
                                          'observation.environment_state': PolicyFeature(FeatureType.ENV, (ENV_DIM,))},
                          output_features={'action': PolicyFeature(FeatureType.ACTION, (ACTION_DIM,))},
                          n_obs_steps=n_obs_steps, horizon=8, n_action_steps=4, down_dims=(16, 32), n_groups=4,
                          diffusion_step_embed_dim=16, num_inference_steps=2, device='cpu')
    torch.manual_seed(0)
    policy = DiffusionPolicy(cfg)
    mm = lambda n, lo, hi: {'min': torch.full((n,), lo), 'max': torch.full((n,), hi), 'mean': torch.zeros(n),
                            'std': torch.ones(n)}
    stats = {'observation.state': mm(STATE_DIM, -3.0, 3.0), 'observation.environment_state': mm(ENV_DIM, -2.0, 2.0),
             'action': mm(ACTION_DIM, -1.0, 1.0)}
    return _save(cfg, policy, stats, d)


def random_obs(rng) -> dict:
    return {'observation.state': rng.normal(size=STATE_DIM).astype(np.float32),
            'observation.environment_state': rng.normal(size=ENV_DIM).astype(np.float32), 'task': 'pick the cube'}


class LeRobotReference:
    "The checkpoint called in-process with LeRobot's own API only (no robobench code): one observation -> its chunk."
    def __init__(self, d):
        import torch
        from lerobot.configs.policies import PreTrainedConfig
        from lerobot.policies.factory import get_policy_class, make_pre_post_processors
        self.torch = torch
        cfg = PreTrainedConfig.from_pretrained(d)
        self.policy = get_policy_class(cfg.type).from_pretrained(d).eval()
        self.pre, self.post = make_pre_post_processors(cfg, pretrained_path=str(d))

    def act(self, obs: dict, fn) -> np.ndarray:
        t = self.torch
        batch = {k: (t.from_numpy(np.array(v)) if isinstance(v, np.ndarray) else v) for k, v in obs.items()}
        with t.inference_mode():
            return self.post(fn(self.pre(batch)))[0].numpy()

    def __call__(self, obs: dict) -> np.ndarray: return self.act(obs, self.policy.predict_action_chunk)


class LeRobotStepReference(LeRobotReference):
    """LeRobot's own rollout API on a checkpoint: `reset()` per episode, `select_action` per step (what lerobot-eval
    does)."""
    def reset(self): self.policy.reset()

    def __call__(self, obs: dict) -> np.ndarray: return self.act(obs, self.policy.select_action)


def train_tiny_act(data_root, out, steps: int, n_action_steps: int, chunk: int = 10, repo: str = 'demos'):
    "`robobench train` of a tiny ACT (no VAE) on `data_root/repo` into `out`, as a CLI child: the CompletedProcess."
    import subprocess, sys
    cli = str(Path(sys.executable).parent / 'robobench')
    return subprocess.run([cli, 'train', '--repo-ids', repo, '--root', str(data_root), '--policy', 'act',
                           '--training-steps', str(steps), '--batch-size', '8', '--save-freq', str(steps),
                           '--log-freq', str(max(1, steps // 2)), '--action-chunk-size', str(chunk),
                           '--n-action-steps', str(n_action_steps), '--policy.dim_model', '32',
                           '--policy.dim_feedforward', '64', '--policy.use_vae', 'false', '--output-dir', str(out)],
                          capture_output=True, text=True, timeout=600)
