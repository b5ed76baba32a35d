"""Benchmark: serving and training 3B-class policies on a GPU: pi0-size and SmolVLA-size, random weights at full size.

Inference (one GPU, batch 1, 3 cameras, 10 flow steps, the prefix K/V computed once and reused by every step):
  * ``chunk_ms`` p50 / p99 with beta = 1 and ``cfg_chunk_ms`` with beta = 2 (both prompts as one batch of 2);
  * variants: ``bf16`` (weights and compute in bfloat16), ``bf16_compile`` (the velocity network through
    ``torch.compile``, measured, not assumed to help) and the same-run baseline ``eager_fp32``;
  * ``peak_memory_gb`` per variant (``torch.cuda.max_memory_allocated``).
Training (pi0-size under torchrun on every GPU of the machine, FSDP2, bf16 mixed precision, activation
checkpointing; synthetic batches of the real shapes): samples/s and peak memory per GPU, against the same-run
baseline of one GPU in eager fp32 (no sharding, no checkpointing; ``oom`` when it does not fit).

Each measurement is repeated (``--repeats``); the JSON reports the median and the worst repeat. Targets on one
H200: pi0-size chunk p50 <= 30 ms without CFG, <= 40 ms with batched CFG (worst repeat). ``--quick`` runs tiny
models on CPU (CI's smoke check); without ``--quick`` a CUDA device is required.
Last line: {"name": "vla_serve", ...}
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CHUNK_TARGET_MS = 30.0
CFG_TARGET_MS = 40.0
CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")
STATE_DIM = 14


def architecture(family: str, quick: bool):
    """The family's full-size config, or a tiny one (``--quick``)."""
    from recap_core.models.families.pi0 import Pi0Config
    from recap_core.models.families.smolvla import SmolVLAConfig

    if family == "pi0":
        if not quick:
            return Pi0Config()
        from recap_core.testing import TINY_PI0

        return Pi0Config.from_dict({**TINY_PI0, "chunk_size": 50, "image_size": 32})
    if not quick:
        return SmolVLAConfig()
    reference = ROOT / "src/recap_core/test/reference/smolvla"
    config = json.loads((reference / "checkpoint_v033" / "config.json").read_text())
    vlm = json.loads((reference / "vlm_config.json").read_text())
    return dataclasses.replace(SmolVLAConfig.from_lerobot_config(config, vlm), max_state_dim=16, max_action_dim=16)


def build_policy(family: str, quick: bool, device: str, dtype: torch.dtype):
    """A FamilyPolicy of random weights (N(0, 0.02), norms at 1) on ``device`` in ``dtype``."""
    from transformers.initialization import no_init_weights

    from recap_core.models.configuration import FamilyPolicyConfig
    from recap_core.models.families import FAMILIES, family_classes
    from recap_core.models.families.common import FamilyPolicy

    arch = architecture(family, quick)
    _, _, model_cls = family_classes(family)
    assert family in FAMILIES
    with no_init_weights():  # drawing 3B numbers on the CPU takes minutes; they are drawn on the device below
        core = model_cls(arch)
    core.to(device=device, dtype=dtype)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, parameter in core.named_parameters():
            if parameter.dim() == 1 and "norm" in name:
                parameter.fill_(1.0 if "weight" in name else 0.0)
            else:
                parameter.normal_(0.0, 0.02, generator=generator)
    config = FamilyPolicyConfig(
        family=family,
        architecture=arch.to_dict(),
        cameras=CAMERAS,
        state_dim=STATE_DIM,
        action_dim=STATE_DIM,
        action_horizon=arch.chunk_size,
        num_flow_steps=arch.num_steps,
        image_size=arch.image_size,
        max_prompt_tokens=arch.tokenizer_max_length,
    )
    return FamilyPolicy(config, core).eval()


def synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def percentile(values, q) -> float:
    return float(np.percentile(np.asarray(values), q))


def measure_inference(family: str, variant: str, quick: bool, device: str, iters: int, warmup: int) -> dict:
    dtype = torch.float32 if variant == "eager_fp32" else torch.bfloat16
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    policy = build_policy(family, quick, device, dtype)
    if variant == "bf16_compile":
        policy.model.velocity = torch.compile(policy.model.velocity, dynamic=False)
    size, prompt = policy.config.image_size, policy.config.max_prompt_tokens
    generator = torch.Generator(device=device).manual_seed(1)
    images = (torch.rand(1, len(CAMERAS), 3, size, size, generator=generator, device=device) * 2 - 1).to(dtype)
    state = torch.randn(1, STATE_DIM, generator=generator, device=device).to(dtype)
    vocab = policy.arch.vocab_size
    ids = torch.randint(3, vocab, (1, prompt), generator=generator, device=device)
    mask = torch.ones(1, prompt, dtype=torch.bool, device=device)
    unconditional = (ids[:, : prompt // 2], mask[:, : prompt // 2])
    noise = torch.randn(1, *policy.noise_shape, generator=generator, device=device).to(dtype)

    def chunk(beta):
        with torch.inference_mode():
            policy.sample_actions(images, state, (ids, mask), noise, unconditional=unconditional, beta=beta)
        synchronise(device)

    times = {"chunk": [], "cfg": []}
    for _ in range(warmup):
        chunk(1.0)
        chunk(2.0)
    for _ in range(iters):
        for name, beta in (("chunk", 1.0), ("cfg", 2.0)):
            start = time.perf_counter()
            chunk(beta)
            times[name].append((time.perf_counter() - start) * 1e3)
    result = {
        "chunk_ms_p50": round(percentile(times["chunk"], 50), 2),
        "chunk_ms_p99": round(percentile(times["chunk"], 99), 2),
        "cfg_chunk_ms_p50": round(percentile(times["cfg"], 50), 2),
        "cfg_chunk_ms_p99": round(percentile(times["cfg"], 99), 2),
        "params_m": round(sum(p.numel() for p in policy.parameters()) / 1e6, 1),
        "image_px": size,
    }
    if device.startswith("cuda"):
        result["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


def summarise(repeats: list[dict]) -> dict:
    """Median and worst (highest time, highest memory) over the repeats of one measurement."""
    out = {}
    for key in repeats[0]:
        values = [r[key] for r in repeats]
        if key.endswith(("_ms_p50", "_ms_p99", "_gb")):
            out[key] = {"median": round(statistics.median(values), 2), "worst": round(max(values), 2)}
        else:
            out[key] = values[0]
    return out


# ---------------------------------------------------------------------------- training (torchrun worker)


def train_worker(args) -> None:
    """One rank of the training measurement (launched by torchrun, or alone for the baseline)."""
    import torch.distributed as dist

    from recap_core.models.policy import PolicyInputs
    from recap_core.train import fsdp

    sharded = args.train_mode == "fsdp_bf16"
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = f"cuda:{local}" if not args.quick else "cpu"
    if device.startswith("cuda"):
        torch.cuda.set_device(local)
    if sharded and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    policy = build_policy("pi0", args.quick, device, torch.float32).train()
    if sharded:
        fsdp.enable_activation_checkpointing(policy)
        fsdp.fully_shard_model(policy, "bf16")
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-5, betas=(0.9, 0.95))
    batch = args.train_batch
    generator = torch.Generator(device=device).manual_seed(rank)
    size, prompt, horizon = policy.config.image_size, policy.config.max_prompt_tokens, policy.config.action_horizon
    inputs = PolicyInputs(
        images=torch.rand(batch, len(CAMERAS), 3, size, size, generator=generator, device=device) * 2 - 1,
        state=torch.randn(batch, STATE_DIM, generator=generator, device=device),
        prompt_ids=torch.randint(3, policy.arch.vocab_size, (batch, prompt), generator=generator, device=device),
        prompt_mask=torch.ones(batch, prompt, dtype=torch.bool, device=device),
        actions=torch.randn(batch, horizon, STATE_DIM, generator=generator, device=device),
        action_is_pad=torch.zeros(batch, horizon, dtype=torch.bool, device=device),
    )

    def step():
        loss = policy(inputs).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        synchronise(device)

    figures = {}
    try:
        for _ in range(args.train_warmup):
            step()
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(args.train_steps):
            step()
        elapsed = time.perf_counter() - start
        world = dist.get_world_size() if dist.is_initialized() else 1
        figures = {
            "samples_per_s": round(batch * world * args.train_steps / elapsed, 2),
            "steps_per_s": round(args.train_steps / elapsed, 3),
            "gpus": world,
            "batch_per_gpu": batch,
        }
        if device.startswith("cuda"):
            figures["peak_memory_gb_per_gpu"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    except torch.OutOfMemoryError:
        figures = {"oom": True, "batch_per_gpu": batch}
    if rank == 0:
        print("TRAIN " + json.dumps(figures), flush=True)
    if dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure_training(args, mode: str) -> dict:
    """Run :func:`train_worker` in child processes: ``fsdp_bf16`` on every GPU under torchrun, ``eager_fp32`` on
    one (CPU: two gloo ranks, or one process, with ``--quick``)."""
    gpus = torch.cuda.device_count() if not args.quick else 2
    worker = [__file__, "--train-worker", "--train-mode", mode, "--train-batch", str(args.train_batch),
              "--train-steps", str(args.train_steps), "--train-warmup", str(args.train_warmup)]  # fmt: skip
    if args.quick:
        worker.append("--quick")
    if mode == "fsdp_bf16":
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(max(1, gpus)),
                   "--master_port", str(free_port()), *worker]  # fmt: skip
    else:
        command = [sys.executable, *worker]
    env = {**os.environ, "OMP_NUM_THREADS": "1" if args.quick else os.environ.get("OMP_NUM_THREADS", "8")}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3000)
    lines = [line for line in result.stdout.splitlines() if line.startswith("TRAIN ")]
    if result.returncode != 0 or not lines:
        tail = (result.stderr or result.stdout)[-600:].replace("\n", " | ")
        return {"error": f"exit {result.returncode}: {tail}"}
    return json.loads(lines[-1][len("TRAIN ") :])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models on CPU (CI smoke check)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats of each measurement (default 3; quick 2)")
    parser.add_argument("--iters", type=int, default=None, help="chunks per repeat (default 30; quick 3)")
    parser.add_argument("--families", default="pi0,smolvla")
    parser.add_argument("--variants", default="eager_fp32,bf16,bf16_compile")
    parser.add_argument("--no-train", action="store_true", help="skip the training measurement")
    parser.add_argument("--train-batch", type=int, default=None, help="samples per GPU (default 16; quick 2)")
    parser.add_argument("--train-steps", type=int, default=None, help="timed steps (default 10; quick 2)")
    parser.add_argument("--train-warmup", type=int, default=None, help="untimed steps first (default 3; quick 1)")
    parser.add_argument("--train-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--train-mode", default="fsdp_bf16", help=argparse.SUPPRESS)
    args = parser.parse_args()
    quick = args.quick
    repeats = args.repeats or (2 if quick else 3)
    iters = args.iters or (3 if quick else 30)
    args.train_batch = args.train_batch or (2 if quick else 16)
    args.train_steps = args.train_steps or (2 if quick else 10)
    args.train_warmup = args.train_warmup if args.train_warmup is not None else (1 if quick else 3)
    if args.train_worker:
        train_worker(args)
        return 0
    if not quick and not torch.cuda.is_available():
        print(
            "vla_serve: the full-size measurement needs a CUDA device; --quick runs tiny models on CPU", file=sys.stderr
        )
        return 2
    device = "cpu" if quick else "cuda"
    if quick:
        torch.set_num_threads(2)
    variants = [v for v in args.variants.split(",") if v]
    if quick:  # torch.compile's first compile alone takes longer than CI's smoke check allows
        variants = [v for v in variants if v != "bf16_compile"]
    result = {
        "name": "vla_serve",
        "device": torch.cuda.get_device_name(0) if not quick else "cpu",
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "quick": quick,
        "cameras": len(CAMERAS),
        "flow_steps": 10,
        "repeats": repeats,
        "iters": iters,
        "inference": {},
    }
    for family in [f for f in args.families.split(",") if f]:
        result["inference"][family] = {}
        for variant in variants:
            runs = [measure_inference(family, variant, quick, device, iters, 1 if quick else 5) for _ in range(repeats)]
            result["inference"][family][variant] = summarise(runs)
            print(f"{family} {variant}: {result['inference'][family][variant]}", file=sys.stderr)
    result["baseline"] = {family: figures.get("eager_fp32") for family, figures in result["inference"].items()}
    if not args.no_train:
        result["training"] = {"pi0": {mode: measure_training(args, mode) for mode in ("fsdp_bf16", "eager_fp32")}}
    best = result["inference"].get("pi0", {})
    fastest = [figures for name, figures in best.items() if name != "eager_fp32"]
    if fastest and not quick:
        chunk = min(f["chunk_ms_p50"]["worst"] for f in fastest)
        cfg = min(f["cfg_chunk_ms_p50"]["worst"] for f in fastest)
        result["targets"] = {"pi0_chunk_ms_p50": CHUNK_TARGET_MS, "pi0_cfg_chunk_ms_p50": CFG_TARGET_MS}
        result["met"] = {"pi0_chunk": chunk <= CHUNK_TARGET_MS, "pi0_cfg_chunk": cfg <= CFG_TARGET_MS}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
