"""Helpers for tests of the ``recap`` command line: run it in-process, require a one-line user error,
parse JSON as strictly as any other tool would."""

from __future__ import annotations

import json

from recap_core import cli


def recap(*argv) -> int:
    """``recap ARGV...`` in this process; returns its exit status."""
    return cli.main([str(a) for a in argv])


def refused(capsys, *argv) -> str:
    """Run a recap command in this process that must fail as a user error; returns its one stderr line."""
    capsys.readouterr()
    code = recap(*argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def strict_json(text: str):
    """Parse JSON as any strict parser would: NaN and infinities are not JSON."""

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def word_tokenizer(words, directory) -> None:
    """Write a tiny word-level ``tokenizer.json`` (PaliGemma's special-token ids: pad 0, eos 1, bos 2, unk 3; a
    BOS before every prompt) into ``directory``: a stand-in for a real model's tokenizer, small enough for a tiny
    model's vocabulary."""
    import pathlib

    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    for word in words:
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(str(pathlib.Path(directory)))


#: Sizes of a tiny pi0 / pi0.5 (test/reference/pi0/tiny_arch.json's, with room for the simulated station).
TINY_PI0 = {
    "chunk_size": 5,
    "max_state_dim": 16,
    "max_action_dim": 16,
    "image_size": 16,
    "tokenizer_max_length": 24,
    "vision_width": 32,
    "vision_depth": 1,
    "vision_mlp_dim": 64,
    "vision_num_heads": 2,
    "vision_patch_size": 4,
    "vocab_size": 64,
    "width": 64,
    "depth": 2,
    "mlp_dim": 128,
    "num_heads": 2,
    "num_kv_heads": 1,
    "head_dim": 16,
    "expert_width": 32,
    "expert_mlp_dim": 64,
}


def write_lerobot_checkpoint(directory, *, pi05: bool = False, joints: int = 14, seed: int = 0, sizes=None) -> dict:
    """Write a tiny random pi0 (or pi0.5) in LeRobot 0.4's layout: ``config.json``, ``architecture.json`` (its
    sizes), ``model.safetensors`` (``model.`` keys), the processor configs and the normaliser's state files.
    Returns the statistics written (``joints`` state and action dims; quantiles for pi0.5)."""
    import pathlib

    import numpy as np
    import safetensors.torch
    import torch

    from recap_core.models.families.pi0 import Pi0Config, Pi0Model

    directory = pathlib.Path(directory)
    sizes = dict(TINY_PI0 if sizes is None else sizes)
    torch.manual_seed(seed)
    model = Pi0Model(Pi0Config.from_dict({**sizes, "pi05": pi05}))
    directory.mkdir(parents=True)
    tensors = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(tensors, str(directory / "model.safetensors"))
    mode = "QUANTILES" if pi05 else "MEAN_STD"
    norm_map = {"VISUAL": "IDENTITY", "STATE": mode, "ACTION": mode}
    side = sizes["image_size"]
    features = {
        "observation.images.base_0_rgb": {"type": "VISUAL", "shape": [3, side, side]},
        "observation.state": {"type": "STATE", "shape": [joints]},
        "action": {"type": "ACTION", "shape": [joints]},
    }
    config = {
        "type": "pi05" if pi05 else "pi0",
        "paligemma_variant": "gemma_2b",
        "action_expert_variant": "gemma_300m",
        "chunk_size": sizes["chunk_size"],
        "max_state_dim": sizes["max_state_dim"],
        "max_action_dim": sizes["max_action_dim"],
        "image_resolution": [side, side],
        "num_inference_steps": 10,
        "tokenizer_max_length": sizes["tokenizer_max_length"],
        "normalization_mapping": norm_map,
        "input_features": {k: v for k, v in features.items() if k != "action"},
        "output_features": {"action": features["action"]},
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    (directory / "architecture.json").write_text(json.dumps(sizes, indent=2))
    rng = np.random.default_rng(seed)
    stats = {}
    for key in ("observation.state", "action"):
        low = -rng.uniform(1.0, 2.0, joints)
        stats[key] = {
            "mean": rng.normal(size=joints) * 0.1,
            "std": rng.uniform(0.5, 1.0, joints),
            "q01": low,
            "q99": low + rng.uniform(2.0, 3.0, joints),
        }
    flat = {f"{k}.{s}": torch.tensor(v, dtype=torch.float32) for k, e in stats.items() for s, v in e.items()}
    for name, step in (
        ("policy_preprocessor", "normalizer_processor"),
        ("policy_postprocessor", "unnormalizer_processor"),
    ):
        state_file = f"{name}_step_0_{step}.safetensors"
        safetensors.torch.save_file(flat, str(directory / state_file))
        pipeline = {
            "name": name,
            "steps": [
                {
                    "registry_name": step,
                    "config": {"eps": 1e-8, "features": features, "norm_map": norm_map},
                    "state_file": state_file,
                }
            ],
        }
        (directory / f"{name}.json").write_text(json.dumps(pipeline, indent=2))
    return stats
