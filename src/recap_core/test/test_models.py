"""Policy and value models on fake tensors: shapes, masking, caching, CFG, insulation, configs, runners.

Numerical behaviour is pinned by ``reference/models_tiny.json``; after an
intended change to the models refresh it with::

    RECAP_REFRESH_REFERENCE=1 .venv/bin/python -m pytest src/recap_core/test/test_models.py -k reference
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import numpy as np
import pytest
import torch

from recap_core.models import ConfigError, PolicyRunner, RecapPolicy, RecapValue, ValueRunner, get_config
from recap_core.models.configuration import BackboneConfig, PolicyConfig
from recap_core.models.tokenizer import PromptTokenizer, format_prompt, load_tokenizer, train_prompt_tokenizer
from recap_core.models.untrained import save_untrained_checkpoint
from recap_core.models.value import value_loss

torch.set_num_threads(1)
REFERENCE = pathlib.Path(__file__).parent / "reference" / "models_tiny.json"
TASK = "transfer the cube"


@pytest.fixture(scope="module")
def prompts():
    config = get_config("tiny")
    return PromptTokenizer(train_prompt_tokenizer([TASK], config.backbone.vocab_size), config.max_prompt_tokens)


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    return RecapPolicy(get_config("tiny")).eval()


def fake_batch(config, batch: int, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    size = config.backbone.image_size
    images = torch.rand(batch, len(config.cameras), 3, size, size, generator=generator) * 2 - 1
    state = torch.randn(batch, config.state_dim, generator=generator)
    return images, state


# ---------------------------------------------------------------------------- configs and tokenizer


def test_config_typo_suggests_the_closest_name():
    with pytest.raises(ConfigError, match="did you mean 'tiny'"):
        get_config("tinny")
    with pytest.raises(ConfigError, match="kind"):
        get_config("tiny", "critic")
    with pytest.raises(ConfigError, match="pretrained_dir"):
        get_config("pretrained")


def test_configs_validate_and_round_trip_through_json():
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        BackboneConfig(image_size=30, patch_size=8)
    with pytest.raises(ConfigError, match="tokens_per_image"):
        BackboneConfig(tokens_per_image=3)
    with pytest.raises(ConfigError, match="indicator_dropout"):
        get_config("tiny", indicator_dropout=1.5)
    for kind in ("policy", "value"):
        for name in ("tiny", "small"):
            config = get_config(name, kind)
            rebuilt = type(config).from_dict(json.loads(json.dumps(config.to_dict())))
            assert rebuilt == config
    with pytest.raises(ConfigError, match="no field"):
        PolicyConfig.from_dict({**get_config("tiny").to_dict(), "learning_rate": 1.0})


def test_tiny_and_small_sizes():
    assert sum(p.numel() for p in RecapPolicy(get_config("tiny")).parameters()) < 1_000_000
    small = sum(p.numel() for p in RecapPolicy(get_config("small")).parameters())
    assert 1_000_000 < small < 10_000_000
    assert sum(p.numel() for p in RecapValue(get_config("small", "value")).parameters()) < small


def test_tokenizer_round_trips_and_keeps_the_advantage_text(tmp_path, prompts):
    assert format_prompt(TASK, "positive") == f"{TASK}\nAdvantage: positive"
    assert format_prompt(TASK, None) == TASK
    with pytest.raises(ValueError):
        format_prompt(TASK, "great")
    prompts.tokenizer.save_pretrained(str(tmp_path))
    reloaded = load_tokenizer(tmp_path)
    text = format_prompt(TASK, "negative")
    assert reloaded.encode(text) == prompts.tokenizer.encode(text)
    assert reloaded.decode(reloaded.encode(text, add_special_tokens=False)) == text
    short = PromptTokenizer(prompts.tokenizer, max_tokens=12)
    ids = short.ids("a very long task description " * 10, "positive")
    assert len(ids) == 12
    assert prompts.tokenizer.decode(ids).endswith("Advantage: positive")
    batch_ids, mask = prompts([TASK, TASK], ["positive", None])
    assert mask[0].sum() > mask[1].sum() and bool(mask[:, 0].all())


# ---------------------------------------------------------------------------- backbone and expert


def test_prefix_padding_changes_nothing(policy, prompts):
    """Extra pad tokens in the prompt must not change the real tokens' keys/values or the velocity."""
    images, state = fake_batch(policy.config, 1)
    ids, mask = prompts([TASK], ["positive"])
    padded_ids = torch.cat([ids, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(1, 5, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        tokens = policy.backbone.embed_images(images)
        plain = policy.encode_prefix(tokens, state, ids, mask)
        padded = policy.encode_prefix(tokens, state, padded_ids, padded_mask)
        length = plain.prefix.keys[0].shape[2]
        for k_plain, k_padded in zip(plain.prefix.keys, padded.prefix.keys):
            torch.testing.assert_close(k_padded[:, :, :length], k_plain, atol=1e-5, rtol=1e-5)
        x = torch.randn(1, policy.config.action_horizon, policy.config.action_dim)
        torch.testing.assert_close(
            policy._velocity(padded, x, 0.3), policy._velocity(plain, x, 0.3), atol=1e-5, rtol=1e-5
        )


def test_cached_prefix_is_reused_unchanged_across_steps(policy, prompts):
    images, state = fake_batch(policy.config, 2)
    ids, mask = prompts([TASK, TASK], ["positive", "negative"])
    with torch.no_grad():
        context = policy.encode_prefix(policy.backbone.embed_images(images), state, ids, mask)
        lengths = [k.shape[2] for k in context.prefix.keys]
        x = torch.randn(2, policy.config.action_horizon, policy.config.action_dim)
        first = policy._velocity(context, x, 0.1)
        for eta in (0.2, 0.5, 0.9):
            policy._velocity(context, torch.randn_like(x), eta)
        torch.testing.assert_close(policy._velocity(context, x, 0.1), first, rtol=0, atol=0)
        assert [k.shape[2] for k in context.prefix.keys] == lengths
        # the prompt reaches the expert through the cached keys/values
        assert not torch.allclose(first[0], first[1])


def test_policy_loss_is_per_sample_and_masked(policy, prompts):
    config = policy.config
    images, state = fake_batch(config, 3)
    ids, mask = prompts([TASK] * 3, ["positive", "negative", None])
    from recap_core.models.policy import PolicyInputs

    actions = torch.randn(3, config.action_horizon, config.action_dim)
    is_pad = torch.zeros(3, config.action_horizon, dtype=torch.bool)
    is_pad[2] = True
    inputs = PolicyInputs(images, state, ids, mask, actions, is_pad, torch.tensor([1.0, 2.0, 1.0]))
    loss = policy.compute_loss(inputs, torch.Generator().manual_seed(0))
    assert loss.shape == (3,) and bool(torch.isfinite(loss).all())
    assert float(loss[2].detach()) == 0.0
    with pytest.raises(ValueError, match="actions must be"):
        policy.compute_loss(dataclasses.replace(inputs, actions=actions[:, :5]))


def test_state_dropout_hides_the_state_of_dropped_samples_only(policy, prompts):
    from recap_core.models.policy import PolicyInputs

    config = policy.config
    images, state = fake_batch(config, 2)
    images = images[:1].expand(2, -1, -1, -1, -1)  # same images: only the state tells the samples apart
    ids, mask = prompts([TASK] * 2, [None, None])
    actions = torch.randn(1, config.action_horizon, config.action_dim).expand(2, -1, -1)
    inputs = PolicyInputs(images, state, ids, mask, actions, torch.zeros(2, config.action_horizon, dtype=torch.bool))

    def loss(keep):
        return policy.compute_loss(dataclasses.replace(inputs, state_keep=keep), torch.Generator().manual_seed(0))

    seen, hidden = loss(None), loss(torch.tensor([False, False]))
    # noise and flow time differ per sample, so compare each sample with itself
    assert not torch.allclose(seen, hidden)
    both_hidden = loss(torch.tensor([False, False]))
    swapped_state = policy.compute_loss(
        dataclasses.replace(inputs, state=state.flip(0), state_keep=torch.tensor([False, False])),
        torch.Generator().manual_seed(0),
    )
    torch.testing.assert_close(both_hidden, swapped_state)  # a dropped state no longer matters
    mixed = loss(torch.tensor([True, False]))
    torch.testing.assert_close(mixed[0], seen[0])
    torch.testing.assert_close(mixed[1], hidden[1])


@pytest.mark.parametrize("insulated", [False, True])
def test_knowledge_insulation_stops_gradients_into_the_backbone(prompts, insulated):
    torch.manual_seed(0)
    model = RecapPolicy(get_config("tiny", knowledge_insulation=insulated))
    from recap_core.models.policy import PolicyInputs

    images, state = fake_batch(model.config, 2)
    ids, mask = prompts([TASK] * 2, ["positive", None])
    actions = torch.randn(2, model.config.action_horizon, model.config.action_dim)
    model.compute_loss(PolicyInputs(images, state, ids, mask, actions)).mean().backward()
    backbone_grads = [p.grad for p in model.backbone.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    expert_grads = [p.grad for p in model.expert.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert expert_grads
    assert (not backbone_grads) == insulated


def test_conv_stem_keeps_the_patch_grid_and_round_trips(tmp_path):
    for bad in ({"patch_size": 6, "image_size": 36}, {"patch_size": 1, "image_size": 32}):
        with pytest.raises(ConfigError, match="power of two"):
            BackboneConfig(vision_stem="conv", **bad)
    with pytest.raises(ConfigError, match="vision_stem"):
        BackboneConfig(vision_stem="resnet")
    config = get_config("tiny", backbone=BackboneConfig(vision_stem="conv"))
    assert PolicyConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    torch.manual_seed(0)
    conv, patch = RecapPolicy(config), RecapPolicy(get_config("tiny"))
    images, _ = fake_batch(config, 2)
    tokens = conv.backbone.embed_images(images)
    assert tokens.shape == patch.backbone.embed_images(images).shape
    assert not torch.allclose(tokens[0], tokens[1])  # different images, different tokens
    # a 3-pixel blob moved by 3 pixels changes the conv stem's tokens
    blob = torch.full_like(images[:1], -1.0)
    blob[..., 10:13, 10:13] = 1.0
    moved = torch.roll(blob, shifts=3, dims=-1)
    assert not torch.allclose(conv.backbone.embed_images(blob), conv.backbone.embed_images(moved))
    directory = save_untrained_checkpoint(tmp_path / "conv", config, tasks=[TASK])
    loaded = PolicyRunner.from_checkpoint(directory)
    assert loaded.model.config.backbone.vision_stem == "conv"
    torch.manual_seed(0)  # save_untrained_checkpoint's seed: the same weights, through safetensors and back
    reference = RecapPolicy(config).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.backbone.embed_images(images), reference.backbone.embed_images(images))


def test_image_conditioning_starts_neutral_then_reads_the_images(policy, prompts):
    from recap_core.models.policy import PolicyInputs

    config = dataclasses.replace(
        policy.config, expert=dataclasses.replace(policy.config.expert, image_conditioning=True)
    )
    conditioned = RecapPolicy(config).eval()
    missing, unexpected = conditioned.load_state_dict(policy.state_dict(), strict=False)
    assert sorted(missing) == ["expert.image_condition.bias", "expert.image_condition.weight"] and not unexpected
    images, state = fake_batch(config, 2)
    ids, mask = prompts([TASK] * 2, ["positive", None])
    actions = torch.randn(2, config.action_horizon, config.action_dim)
    inputs = PolicyInputs(images, state, ids, mask, actions)
    # zero-initialised: exactly the unconditioned policy's loss
    torch.testing.assert_close(
        conditioned.compute_loss(inputs, torch.Generator().manual_seed(0)),
        policy.compute_loss(inputs, torch.Generator().manual_seed(0)),
    )
    conditioned.train()
    conditioned.compute_loss(inputs, torch.Generator().manual_seed(0)).mean().backward()
    assert conditioned.expert.image_condition.weight.grad.abs().sum() > 0
    conditioned.eval()
    with torch.no_grad():
        conditioned.expert.image_condition.weight.normal_(std=0.05)
    noise = torch.randn(1, config.action_horizon, config.action_dim)
    conditional, unconditional = prompts([TASK], ["positive"]), prompts([TASK], [None])

    def sample(conditioned_images, **kwargs):
        return conditioned.sample_actions(conditioned_images, state[:1], conditional, noise, **kwargs)

    base = sample(images[:1])
    other = sample(images[1:])
    assert not torch.allclose(base, other)
    batched = sample(images[:1], unconditional=unconditional, beta=2.0)
    sequential = sample(images[:1], unconditional=unconditional, beta=2.0, batch_guidance=False)
    torch.testing.assert_close(batched, sequential, atol=1e-5, rtol=1e-5)
    from recap_core.models.expert import ExpertContext

    context = conditioned.encode_prefix(conditioned.backbone.embed_images(images[:1]), state[:1], *conditional)
    bare = ExpertContext(context.prefix, context.rotary, context.layer_types, config.action_horizon)
    with pytest.raises(ValueError, match="image_conditioning"):
        conditioned.expert(noise, torch.zeros(1), bare)


def test_advantage_embedding_starts_neutral_then_separates_the_conditions(policy, prompts, tmp_path):
    from recap_core.models.policy import PolicyInputs
    from recap_core.models.tokenizer import advantage_codes

    config = dataclasses.replace(
        policy.config, expert=dataclasses.replace(policy.config.expert, advantage_embedding=True)
    )
    torch.manual_seed(0)
    embedded = RecapPolicy(config).eval()
    torch.manual_seed(0)
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            RecapPolicy(policy.config).state_dict().values(),
            [v for k, v in embedded.state_dict().items() if k != "expert.advantage_embedding.weight"],
        )
    )  # draws no RNG
    missing, unexpected = embedded.load_state_dict(policy.state_dict(), strict=False)
    assert missing == ["expert.advantage_embedding.weight"] and not unexpected
    images, state = fake_batch(config, 3)
    advantages = ["positive", "negative", None]
    ids, mask = prompts([TASK] * 3, advantages)
    codes = advantage_codes(advantages)
    assert codes.tolist() == [1, 2, 0]
    actions = torch.randn(3, config.action_horizon, config.action_dim)
    inputs = PolicyInputs(images, state, ids, mask, actions, advantage_code=codes)
    torch.testing.assert_close(
        embedded.compute_loss(inputs, torch.Generator().manual_seed(0)),
        policy.compute_loss(inputs, torch.Generator().manual_seed(0)),
    )  # zero-initialised
    embedded.train()
    embedded.compute_loss(inputs, torch.Generator().manual_seed(0)).mean().backward()
    assert (embedded.expert.advantage_embedding.weight.grad.abs().sum(dim=1) > 0).all()  # every condition learns
    embedded.eval()
    with torch.no_grad():
        embedded.expert.advantage_embedding.weight.normal_(std=0.5)
    noise = torch.randn(1, config.action_horizon, config.action_dim)

    def sample(advantage, **kwargs):
        prompt = (*prompts([TASK], [advantage]), advantage_codes([advantage]))
        return embedded.sample_actions(images[:1], state[:1], prompt, noise, **kwargs)

    positive, negative = sample("positive"), sample("negative")
    assert not torch.allclose(positive, negative)
    unconditional = (*prompts([TASK], [None]), advantage_codes([None]))
    batched = sample("positive", unconditional=unconditional, beta=2.0)
    sequential = sample("positive", unconditional=unconditional, beta=2.0, batch_guidance=False)
    torch.testing.assert_close(batched, sequential, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="advantage_code"):  # the text alone is not enough for this expert
        embedded.sample_actions(images[:1], state[:1], prompts([TASK], ["positive"]), noise)
    # through a checkpoint and the runner: the processor derives the code from the condition asked for
    from recap_core.models.untrained import save_untrained_checkpoint

    save_untrained_checkpoint(tmp_path / "p", config, tasks=[TASK])
    runner = PolicyRunner.from_checkpoint(tmp_path / "p")
    with torch.no_grad():
        runner.model.expert.advantage_embedding.weight.normal_(std=0.5)
    obs = {"images": {c: np.zeros((32, 32, 3), np.uint8) for c in config.cameras}, "state": np.zeros(14), "task": TASK}
    chunks = {a: runner.infer(obs, advantage=a, seed=3)["actions"] for a in ("positive", "negative", None)}
    assert not np.allclose(chunks["positive"], chunks["negative"])
    assert not np.allclose(chunks["positive"], chunks[None])
    assert np.isfinite(runner.infer(obs, beta=2.0, seed=3)["actions"]).all()


# ---------------------------------------------------------------------------- sampling and CFG


def test_beta_one_runs_only_the_conditional_prompt(policy, prompts, monkeypatch):
    images, state = fake_batch(policy.config, 1)
    conditional = prompts([TASK], ["positive"])
    unconditional = prompts([TASK], [None])
    noise = torch.randn(
        1, policy.config.action_horizon, policy.config.action_dim, generator=torch.Generator().manual_seed(5)
    )
    plain = policy.sample_actions(images, state, conditional, noise)
    batches = []
    original = policy.encode_prefix

    def spy(tokens, state_, ids, mask, *rest):
        batches.append(ids.shape[0])
        return original(tokens, state_, ids, mask, *rest)

    monkeypatch.setattr(policy, "encode_prefix", spy)
    guided = policy.sample_actions(images, state, conditional, noise, unconditional=unconditional, beta=1.0)
    torch.testing.assert_close(guided, plain, rtol=0, atol=0)
    assert batches == [1]
    policy.sample_actions(images, state, conditional, noise, unconditional=unconditional, beta=2.0)
    assert batches == [1, 2]  # conditional and unconditional as one batch of 2


def test_batched_guidance_equals_two_sequential_passes(policy, prompts):
    images, state = fake_batch(policy.config, 1)
    conditional, unconditional = prompts([TASK], ["positive"]), prompts([TASK], [None])
    noise = torch.randn(1, policy.config.action_horizon, policy.config.action_dim)
    batched = policy.sample_actions(images, state, conditional, noise, unconditional=unconditional, beta=2.5)
    sequential = policy.sample_actions(
        images, state, conditional, noise, unconditional=unconditional, beta=2.5, batch_guidance=False
    )
    torch.testing.assert_close(batched, sequential, atol=1e-5, rtol=1e-5)
    plain = policy.sample_actions(images, state, conditional, noise)
    assert not torch.allclose(batched, plain)
    with pytest.raises(ValueError, match="unconditional"):
        policy.sample_actions(images, state, conditional, noise, beta=2.0)


# ---------------------------------------------------------------------------- value model


def test_value_logits_and_expected_value():
    torch.manual_seed(0)
    model = RecapValue(get_config("tiny", "value")).eval()
    config = model.config
    prompts = PromptTokenizer(train_prompt_tokenizer([TASK], config.backbone.vocab_size), config.max_prompt_tokens)
    images, state = fake_batch(config, 4)
    ids, mask = prompts([TASK] * 4, [None] * 4)
    with torch.no_grad():
        logits = model(images, state, ids, mask)
    assert logits.shape == (4, 201)
    value = model.expected_value(logits)
    assert bool(((value >= -1) & (value <= 0)).all())
    target = torch.zeros(4, 201)
    target[:, 100] = 1.0
    torch.testing.assert_close(
        value_loss(logits, target), torch.nn.functional.cross_entropy(logits, torch.full((4,), 100), reduction="none")
    )


# ---------------------------------------------------------------------------- runners


@pytest.fixture(scope="module")
def runners(tmp_path_factory):
    root = tmp_path_factory.mktemp("untrained")
    save_untrained_checkpoint(root / "policy", get_config("tiny"), tasks=[TASK])
    save_untrained_checkpoint(root / "value", get_config("tiny", "value"), tasks=[TASK])
    return PolicyRunner.from_checkpoint(root / "policy"), ValueRunner.from_checkpoint(root / "value")


def observation(rng: np.random.Generator, size=(48, 64)):
    return {
        "images": {
            cam: rng.integers(0, 255, (*size, 3), dtype=np.uint8) for cam in ("base", "left_wrist", "right_wrist")
        },
        "state": rng.normal(size=14).astype(np.float32),
        "task": TASK,
    }


def test_policy_runner_contract(runners):
    policy_runner, _ = runners
    obs = observation(np.random.default_rng(0))
    out = policy_runner.infer(obs, seed=3)
    assert out["actions"].shape == (50, 14) and out["actions"].dtype == np.float32
    assert out["latency_ms"] > 0
    np.testing.assert_array_equal(policy_runner.infer(obs, seed=3)["actions"], out["actions"])
    assert not np.array_equal(policy_runner.infer(obs, seed=4)["actions"], out["actions"])
    # knobs may also ride in the observation; keyword arguments win
    np.testing.assert_array_equal(policy_runner.infer({**obs, "seed": 3})["actions"], out["actions"])
    policy_runner.reset()
    first = policy_runner.infer(obs)["actions"]
    policy_runner.infer(obs)
    policy_runner.reset()
    np.testing.assert_array_equal(policy_runner.infer(obs)["actions"], first)
    # beta = 1 with "positive" is the conditional sample, whatever the CFG path would do
    cfg = policy_runner.infer(obs, seed=3, beta=1.0, advantage="positive")["actions"]
    np.testing.assert_array_equal(cfg, out["actions"])
    assert not np.allclose(policy_runner.infer(obs, seed=3, beta=2.0)["actions"], out["actions"])


def test_policy_runner_rejects_bad_observations(runners):
    policy_runner, _ = runners
    obs = observation(np.random.default_rng(0))
    with pytest.raises(ValueError, match="camera 'base'"):
        policy_runner.infer({**obs, "images": {"left_wrist": obs["images"]["left_wrist"]}})
    with pytest.raises(ValueError, match="14 finite"):
        policy_runner.infer({**obs, "state": np.zeros(7)})
    with pytest.raises(ValueError, match="uint8"):
        policy_runner.infer({**obs, "images": {**obs["images"], "base": np.zeros((8, 8, 3), np.float32)}})
    with pytest.raises(ValueError, match="beta"):
        policy_runner.infer(obs, beta=2.0, advantage=None)
    with pytest.raises(ValueError, match="advantage"):
        policy_runner.infer(obs, advantage="excellent")


def test_value_runner_contract(runners):
    _, value_runner = runners
    out = value_runner.infer(observation(np.random.default_rng(1), size=(20, 30)))
    assert -1.0 <= out["value"] <= 0.0
    assert out["distribution"].shape == (201,) and out["distribution"].dtype == np.float32
    assert out["distribution"].sum() == pytest.approx(1.0, abs=1e-5)
    assert value_runner.checkpoint_id.startswith("value-")


# ---------------------------------------------------------------------------- pinned numbers


def _reference_numbers() -> dict:
    config = get_config("tiny")
    torch.manual_seed(0)
    model = RecapPolicy(config).eval()
    prompts = PromptTokenizer(train_prompt_tokenizer([TASK], config.backbone.vocab_size), config.max_prompt_tokens)
    images, state = fake_batch(config, 1, seed=7)
    noise = torch.randn(1, config.action_horizon, config.action_dim, generator=torch.Generator().manual_seed(7))
    chunk = model.sample_actions(
        images, state, prompts([TASK], ["positive"]), noise, unconditional=prompts([TASK], [None]), beta=2.0
    )
    torch.manual_seed(0)
    value_model = RecapValue(get_config("tiny", "value")).eval()
    value_config = value_model.config
    value_images, value_state = fake_batch(value_config, 1, seed=7)
    ids, mask = prompts([TASK], [None])
    with torch.no_grad():
        value = value_model.expected_value(value_model(value_images, value_state, ids, mask))
    return {
        "chunk_first_row": [round(float(v), 6) for v in chunk[0, 0, :4]],
        "chunk_mean": round(float(chunk.mean()), 6),
        "chunk_abs_mean": round(float(chunk.abs().mean()), 6),
        "value": round(float(value[0]), 6),
    }


def test_reference_outputs_are_pinned():
    numbers = _reference_numbers()
    if os.environ.get("RECAP_REFRESH_REFERENCE"):
        REFERENCE.parent.mkdir(exist_ok=True)
        REFERENCE.write_text(json.dumps(numbers, indent=2) + "\n")
    expected = json.loads(REFERENCE.read_text())
    assert numbers.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_allclose(numbers[key], value, atol=1e-4, err_msg=f"{key} moved; see module docstring")


# ---------------------------------------------------------------------------- real weights path (offline)


def test_pretrained_directory_loads_weights_offline(tmp_path):
    """``pretrained`` reads a local Gemma3ForConditionalGeneration directory (save_pretrained output)."""
    from transformers import Gemma3ForConditionalGeneration

    from recap_core.models.backbone import hf_gemma3_config

    tiny = get_config("tiny").backbone
    hf = hf_gemma3_config(dataclasses.replace(tiny))
    torch.manual_seed(3)
    reference = Gemma3ForConditionalGeneration(hf)
    reference.save_pretrained(tmp_path)
    train_prompt_tokenizer([TASK], tiny.vocab_size).save_pretrained(str(tmp_path))
    config = get_config("pretrained", pretrained_dir=tmp_path)
    assert config.backbone.pretrained_dir == str(tmp_path.resolve())
    assert config.backbone.hidden_size == tiny.hidden_size
    model = RecapPolicy(config, load_pretrained_weights=True)
    torch.testing.assert_close(
        model.backbone.language_model.embed_tokens.weight, reference.model.language_model.embed_tokens.weight
    )
    torch.testing.assert_close(
        model.backbone.vision_tower.embeddings.patch_embedding.weight,
        reference.model.vision_tower.embeddings.patch_embedding.weight,
    )
    assert load_tokenizer(tmp_path).encode(TASK)
    rebuilt = type(config).from_dict(json.loads(json.dumps(config.to_dict())))
    assert rebuilt == config


def test_sliding_window_layers_keep_the_whole_prefix(prompts):
    """Gemma 3 mixes sliding-window and global layers; the cached prefix must not be cut to the window."""
    from recap_core.models.backbone import backbone_config_from_hf, hf_gemma3_config

    hf = hf_gemma3_config(get_config("tiny").backbone).to_dict()
    hf["text_config"].update(
        layer_types=["sliding_attention", "full_attention"],
        sliding_window=4,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "default", "rope_theta": 1e6},
        },
    )
    config = dataclasses.replace(get_config("tiny"), backbone=backbone_config_from_hf(hf, None))
    torch.manual_seed(0)
    model = RecapPolicy(config).eval()
    assert model.backbone.layer_types == ["sliding_attention", "full_attention"]
    images, state = fake_batch(config, 1)
    ids, mask = prompts([TASK], ["positive"])
    with torch.no_grad():
        context = model.encode_prefix(model.backbone.embed_images(images), state, ids, mask)
        prefix_length = images.shape[1] * config.backbone.tokens_per_image + 1 + ids.shape[1]
        assert [k.shape[2] for k in context.prefix.keys] == [prefix_length, prefix_length]
        noise = torch.randn(1, config.action_horizon, config.action_dim)
        chunk = model.sample_actions(images, state, (ids, mask), noise)
    assert bool(torch.isfinite(chunk).all())


def test_bf16_runners_stay_close_to_fp32(tmp_path):
    """``precision="bf16"`` (GPU serving) casts weights and inputs; chunks and values stay near fp32's."""
    save_untrained_checkpoint(tmp_path / "p", get_config("tiny"), tasks=[TASK])
    save_untrained_checkpoint(tmp_path / "v", get_config("tiny", "value"), tasks=[TASK])
    rng = np.random.default_rng(0)
    obs = {
        "images": {c: rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for c in ("base", "left_wrist", "right_wrist")},
        "state": rng.normal(size=14).astype(np.float32),
        "task": TASK,
    }
    full = PolicyRunner.from_checkpoint(tmp_path / "p").infer(obs, seed=1)["actions"]
    half_runner = PolicyRunner.from_checkpoint(tmp_path / "p", precision="bf16")
    assert next(half_runner.model.parameters()).dtype == torch.bfloat16
    half = half_runner.infer(obs, seed=1)["actions"]
    assert half.dtype == np.float32 and np.abs(half - full).max() < 0.1 * np.abs(full).max()
    value = ValueRunner.from_checkpoint(tmp_path / "v").infer(obs)["value"]
    assert abs(ValueRunner.from_checkpoint(tmp_path / "v", precision="bf16").infer(obs)["value"] - value) < 0.02
    with pytest.raises(ValueError, match="precision must be one of"):
        PolicyRunner.from_checkpoint(tmp_path / "p", precision="fp16")
