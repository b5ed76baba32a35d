"""Does LeRobot 0.3.3 load what `recap export` writes, and act as our code does? A manual check in two venvs.

    # 1. project venv: a pi0 trained one step under RECAP from lerobot033/, exported in LeRobot's layout, and our
    #    sampled actions on fixed inputs (written into OUT/check_inputs.safetensors)
    .venv/bin/python src/recap_core/test/reference/pi0/check_export.py prepare /tmp/pi0_export
    # 2. reference venv, with the transformers LeRobot 0.3.3's pi0 loader is written for (4.52+'s PaliGemma layout,
    #    though the package pins < 4.52): LeRobot's PI0Policy.from_pretrained(OUT) samples the same inputs; exit 1
    #    beyond 1e-4
    /work/ref/lerobot033/bin/pip install --no-deps --target /work/ref/tf453 transformers==4.53.3
    HF_HUB_OFFLINE=1 PYTHONPATH=/work/ref/tf453 /work/ref/lerobot033/bin/python \
        src/recap_core/test/reference/pi0/check_export.py check /tmp/pi0_export

The check side uses make_reference.py's patches (no hub tokenizer, shrunk sub-configs, fp32). The result is
recorded in docs/models.md.
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def prepare(out: Path) -> None:
    from recap_core.data.synthetic import make_synthetic_dataset
    from recap_core.testing import word_tokenizer

    work = Path(tempfile.mkdtemp(prefix="pi0_export_check_"))
    source = shutil.copytree(HERE / "lerobot033", work / "pi0")
    shutil.copy(HERE / "tiny_arch.json", source / "architecture.json")
    data = make_synthetic_dataset(
        work / "reach", num_episodes=3, cameras=("top",), joint_names=("j0", "j1", "j2", "j3"), gripper_joints=()
    )
    word_tokenizer(["reach", "Advantage", ":", "positive"], work / "tokenizer")
    recap = [sys.executable, "-m", "recap_core.cli"]
    common = ["--no-progress", "--batch-size", "2", "--threads", "1"]
    subprocess.run(
        [*recap, "train-policy", str(data), "--mode", "sft", "--init", str(source), "--tokenizer",
         str(work / "tokenizer"), "--out", str(work / "policy"), "--steps", "3", *common],
        check=True,
    )  # fmt: skip
    subprocess.run([*recap, "export", str(work / "policy"), str(out), "--overwrite"], check=True)


def prepare_inputs(out: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from recap_core.models.families import load_pretrained

    model = load_pretrained(out).model  # the export keeps architecture.json (LeRobot 0.3 reads config.json only)
    gen = torch.Generator().manual_seed(7)
    size, chunk, dim = model.config.image_size, model.config.chunk_size, model.config.max_action_dim
    image = torch.rand(1, 3, size, size, generator=gen) * 2 - 1
    empty = -torch.ones(1, 3, size, size)
    masks = [torch.ones(1, dtype=torch.bool), torch.zeros(1, dtype=torch.bool)]
    tokens = torch.tensor([[2, 4, 5, 6, 7, 0]])
    token_masks = torch.tensor([[True, True, True, True, True, False]])
    state = torch.zeros(1, model.config.max_state_dim)
    state[:, :4] = torch.randn(1, 4, generator=gen)
    noise = torch.randn(1, chunk, dim, generator=gen)
    with torch.no_grad():
        expected = model.sample_actions([image, empty], masks, tokens, token_masks, state, noise.clone())
    save_file(
        {"image0": image, "image1": empty, "mask0": masks[0], "mask1": masks[1], "tokens": tokens,
         "token_masks": token_masks, "state": state, "noise": noise, "expected": expected.contiguous()},
        str(out / "check_inputs.safetensors"),
    )  # fmt: skip


def check(out: Path) -> int:
    import torch
    from safetensors.torch import load_file

    sys.path.insert(0, str(HERE))
    import make_reference
    import transformers

    if transformers.__version__ < "4.52":
        raise SystemExit(
            "LeRobot 0.3.3 loads pi0 files into transformers 4.52+'s PaliGemma (its _transform_state_dict_keys), "
            "though it pins < 4.52: run with PYTHONPATH=DIR holding transformers==4.53.3 (pip install --no-deps "
            "--target DIR transformers==4.53.3)"
        )
    # make_reference's patches but its accessor re-pointing, which only 4.51's PaliGemma needs
    proxy = make_reference._Fp32Torch("torch")
    make_reference.paligemma_with_expert.torch = proxy
    make_reference.modeling_pi0.torch = proxy
    make_reference.modeling_pi0.AutoTokenizer = make_reference._NoTokenizer
    make_reference.modeling_pi0.PaliGemmaWithExpertConfig = make_reference._tiny_pwe_config
    policy = make_reference.modeling_pi0.PI0Policy.from_pretrained(str(out))
    policy.eval()
    inputs = load_file(str(out / "check_inputs.safetensors"))
    with torch.no_grad():
        sampled = policy.model.sample_actions(
            [inputs["image0"], inputs["image1"]],
            [inputs["mask0"], inputs["mask1"]],
            inputs["tokens"],
            inputs["token_masks"],
            inputs["state"],
            noise=inputs["noise"].clone(),
        )
    diff = float((sampled - inputs["expected"]).abs().max())
    stats_ok = torch.allclose(
        policy.normalize_inputs.buffer_observation_state.mean,
        load_file(str(out / "model.safetensors"))["normalize_inputs.buffer_observation_state.mean"],
    )
    print(f"LeRobot 0.3.3 loaded {out}: max |actions - ours| = {diff:.2e}; statistics loaded: {stats_ok}")
    return 0 if diff <= 1e-4 and stats_ok else 1


if __name__ == "__main__":
    mode, target = sys.argv[1], Path(sys.argv[2])
    if mode == "prepare":
        prepare(target)
        prepare_inputs(target)
        print(f"wrote {target}; now run the check in the reference venv")
    elif mode == "check":
        sys.exit(check(target))
    else:
        sys.exit(f"usage: {sys.argv[0]} prepare|check DIR")
