"""Can a policy architecture learn to read the scene? A supervised probe, minutes on 2 CPU cores.

A fresh policy learns the scripted operator's first chunk from the start-pose images of some seeds and
samples on held-out ones; one JSON line compares its error with a scene-blind baseline. See ``main``;
the findings: docs/experiment.md, Protocol ("A policy that reads the scene").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np
import torch

from recap_core.data.writer import feature_stats
from recap_core.models import get_config
from recap_core.models.policy import PolicyInputs, RecapPolicy
from recap_core.models.processor import (
    ACTION_KEY,
    RELATIVE_ACTION_KEY,
    STATE_KEY,
    Processor,
    default_relative_mask,
    policy_steps,
    relative_action_stats,
)
from recap_core.models.tokenizer import PromptTokenizer, train_prompt_tokenizer
from recap_core.station import GRIPPER_INDICES  # the simulated station's, the one this probe drives
from recap_sim.operator import ScriptedOperator
from recap_sim.sim import AlohaSim

TASK = "transfer the cube to the other arm"
RIGHT_ARM = slice(7, 13)


def collect(sim: AlohaSim, seeds, horizon: int) -> dict:
    """Start-pose observations and the scripted operator's first ``horizon`` commands for each seed."""
    images = {camera: [] for camera in sim.camera_names}
    states, chunks = [], []
    for seed in seeds:
        sim.reset(seed)
        operator = ScriptedOperator("transfer_cube", 1.0, seed=seed)
        for camera, image in sim.render().items():
            images[camera].append(torch.from_numpy(image).permute(2, 0, 1))
        states.append(sim.joint_positions().astype(np.float32))
        chunk = []
        for _ in range(horizon):
            command = operator.act(sim.joint_positions(), sim.object_pose())
            chunk.append(command)
            sim.step(command)
        chunks.append(np.asarray(chunk, np.float32))
    return {
        "images": {camera: torch.stack(v) for camera, v in images.items()},
        "state": torch.from_numpy(np.stack(states)),
        "actions": torch.from_numpy(np.stack(chunks)),
        "task": [TASK] * len(states),
    }


def normalisation(data: dict, horizon: int) -> dict:
    states, actions = data["state"].numpy().astype(np.float64), data["actions"].numpy().astype(np.float64)
    # one row per control step: the chunk's commands with the start state repeated (chunk-relative stats)
    flat_actions = actions.reshape(-1, actions.shape[-1])
    flat_states = np.repeat(states, horizon, axis=0)
    episodes = np.repeat(np.arange(len(states)), horizon)

    def stats(x):  # the dataset writer's statistics; the Normaliser floors the std itself
        return {name: value.tolist() for name, value in feature_stats(x).items()}

    mask = default_relative_mask(actions.shape[-1], GRIPPER_INDICES)
    return {
        STATE_KEY: stats(flat_states),
        ACTION_KEY: stats(flat_actions),
        RELATIVE_ACTION_KEY: relative_action_stats(flat_states, flat_actions, episodes, horizon, mask),
    }


def main(argv: list[str] | None = None) -> int:
    """For each seed the sim resets (arms at the start pose, cube where gym-aloha puts it), the three
    cameras are rendered and the scripted operator (quality 1.0) runs one chunk. A fresh policy of
    ``--config`` learns image -> that first chunk on ``--scenes`` seeds, then samples on held-out seeds
    with one fixed noise draw. At the start pose the joint state is the same for every seed, so only the
    images can tell the scenes apart.

    Prints one JSON line: the sampled chunk-end error (right arm, normalised action units) on training
    and held-out scenes, the baseline of predicting the mean chunk (what a policy blind to the scene
    reaches at best), and the spread of the samples across scenes. A policy that reads the cube has a
    held-out error well under the baseline and a spread near the targets' spread::

        .venv/bin/python scripts/scene_probe.py --config small --scenes 64 --steps 400
        .venv/bin/python scripts/scene_probe.py --config small --vision-stem patch --image-conditioning off

    The ``small`` config with SigLIP's patch stem and no image conditioning gives a spread of 0.001 and
    an error above the baseline; with the conv stem and the action expert's image conditioning the
    held-out error drops to about a third of the baseline in 400 steps.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="small", help="model config name (default small)")
    parser.add_argument(
        "--vision-stem", choices=("patch", "conv"), default=None, help="override the config's vision stem"
    )
    parser.add_argument(
        "--image-conditioning",
        choices=("on", "off"),
        default=None,
        help="override the config's action-expert image conditioning",
    )
    parser.add_argument("--scenes", type=int, default=64, help="training seeds (default 64)")
    parser.add_argument("--held-out", type=int, default=16, help="held-out seeds (default 16)")
    parser.add_argument("--steps", type=int, default=400, help="training steps at batch 32 (default 400)")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = get_config(args.config)
    if args.vision_stem is not None:
        config = dataclasses.replace(
            config, backbone=dataclasses.replace(config.backbone, vision_stem=args.vision_stem)
        )
    if args.image_conditioning is not None:
        config = dataclasses.replace(
            config, expert=dataclasses.replace(config.expert, image_conditioning=args.image_conditioning == "on")
        )
    horizon, size = config.action_horizon, config.backbone.image_size
    sim = AlohaSim("transfer_cube", width=size, height=size, max_episode_steps=10 * horizon)
    try:
        train = collect(sim, range(1000, 1000 + args.scenes), horizon)
        test = collect(sim, range(2000, 2000 + args.held_out), horizon)
    finally:
        sim.close()  # the GL context is a process resource
    tokenizer = train_prompt_tokenizer([TASK], config.backbone.vocab_size)
    processor = Processor(
        policy_steps(config.cameras, size, default_relative_mask(config.action_dim, GRIPPER_INDICES)),
        normalisation(train, horizon),
        PromptTokenizer(tokenizer, config.max_prompt_tokens),
    )
    prepared = {
        name: processor.preprocess({**data, "advantage": ["positive"] * len(data["task"])})
        for name, data in (("train", train), ("held_out", test))
    }
    torch.manual_seed(args.seed)
    model = RecapPolicy(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    batch = prepared["train"]
    for _ in range(args.steps):
        index = torch.randint(0, args.scenes, (32,), generator=generator)
        inputs = PolicyInputs(
            batch["pixels"][index],
            batch["state_normalised"][index],
            batch["prompt_ids"][index],
            batch["prompt_mask"][index],
            batch["actions"][index],
            advantage_code=batch["advantage_code"][index],
        )
        loss = model.compute_loss(inputs, generator).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    result = {
        "name": "scene_probe",
        "config": args.config,
        "vision_stem": config.backbone.vision_stem,
        "image_conditioning": config.expert.image_conditioning,
        "scenes": args.scenes,
        "steps": args.steps,
        "final_loss": round(loss.item(), 4),
    }
    noise = torch.randn(1, horizon, config.action_dim, generator=torch.Generator().manual_seed(args.seed + 1))
    for name, data in prepared.items():
        count = data["actions"].shape[0]
        with torch.no_grad():
            sampled = model.sample_actions(
                data["pixels"],
                data["state_normalised"],
                (data["prompt_ids"], data["prompt_mask"], data["advantage_code"]),
                noise.expand(count, -1, -1).contiguous(),
            )
        target, end = data["actions"][:, -1, RIGHT_ARM], sampled[:, -1, RIGHT_ARM]
        result[f"{name}_error"] = round(float((end - target).pow(2).mean().sqrt()), 3)
        result[f"{name}_baseline_mean_chunk"] = round(float((target - target.mean(0)).pow(2).mean().sqrt()), 3)
        result[f"{name}_sample_spread"] = round(float(end.std(0).mean()), 3)
        result[f"{name}_target_spread"] = round(float(target.std(0).mean()), 3)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
