"""Prompt text (:func:`format_prompt`) and its tokenizer (:class:`PromptTokenizer`).

Small configs use a byte-level BPE trained in code (milliseconds, offline), saved as plain ``tokenizer.json``;
a pretrained backbone brings its own. Loading reads JSON only (no pickled or remote code).
"""

from __future__ import annotations

import pathlib
from typing import Iterable, Sequence

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

ADVANTAGE_VALUES = ("positive", "negative")
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")

# A fixed seed corpus so merges for the advantage text and common manipulation words exist
# whatever tasks a dataset holds; dataset task strings are added on top.
_SEED_CORPUS = (
    "Advantage: positive",
    "Advantage: negative",
    "pick up the cube and hand it over to the other arm",
    "transfer the cube from the right gripper to the left gripper",
    "insert the peg into the socket",
    "fold the towel",
    "put the object in the box",
    "open the gripper",
    "close the gripper",
    "move left arm",
    "move right arm",
    "place grasp lift push pull rotate stack sort clean wipe pour make coffee",
)


def format_prompt(task: str, advantage: str | None) -> str:
    """The prompt text for ``task`` with ``advantage`` in {"positive", "negative", None (no text)}.

    The task, then (RECAP) the advantage text on its own line::

        "<task>\\nAdvantage: positive"   |   "<task>\\nAdvantage: negative"   |   "<task>"  (dropped)
    """
    if advantage is None:
        return task
    if advantage not in ADVANTAGE_VALUES:
        raise ValueError(f"advantage must be 'positive', 'negative' or None, got {advantage!r}")
    return f"{task}\nAdvantage: {advantage}"


def train_prompt_tokenizer(texts: Iterable[str] = (), vocab_size: int = 384) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of ``vocab_size`` ids on ``texts`` plus the seed corpus (deterministic), wrapped
    in ``PreTrainedTokenizerFast``."""
    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise ValueError(
            f"vocab_size must be at least {len(SPECIAL_TOKENS) + 256} (256 byte symbols + specials), got {vocab_size}"
        )
    corpus = sorted(
        set(_SEED_CORPUS)
        | {t for text in texts for t in (text, format_prompt(text, "positive"), format_prompt(text, "negative"))}
    )
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    return _wrap(bpe)


def _wrap(bpe: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, directory: pathlib.Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory))


def load_tokenizer(directory: pathlib.Path) -> PreTrainedTokenizerFast:
    """Load ``directory/tokenizer.json`` (plain JSON; nothing executed or unpickled)."""
    path = pathlib.Path(directory) / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer.json in {directory}")
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path))
    for role, token in (("pad_token", "<pad>"), ("bos_token", "<bos>"), ("eos_token", "<eos>"), ("unk_token", "<unk>")):
        if getattr(tokenizer, role) is None and tokenizer.convert_tokens_to_ids(token) is not None:
            setattr(tokenizer, role, token)
    if tokenizer.pad_token is None:
        raise ValueError(f"tokenizer in {directory} has no pad token")
    return tokenizer


def advantage_codes(advantages, device: torch.device | str = "cpu") -> torch.Tensor:
    """Advantage conditions -> ``long [B]``: 0 none (the unconditional policy), 1 positive, 2 negative."""
    codes = []
    for advantage in advantages:
        if advantage is not None and advantage not in ADVANTAGE_VALUES:
            raise ValueError(f"advantage must be 'positive', 'negative' or None, got {advantage!r}")
        codes.append(0 if advantage is None else 1 + ADVANTAGE_VALUES.index(advantage))
    return torch.tensor(codes, dtype=torch.long, device=device)


class PromptTokenizer:
    """Turns (task, advantage) pairs into right-padded ``ids`` ``[B, L]`` and ``mask`` ``[B, L]``.

    ``L <= max_tokens``. A task too long for ``max_tokens`` is cut, never the
    advantage text (the policy must always see its condition).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerFast, max_tokens: int):
        self.tokenizer = tokenizer
        self.max_tokens = int(max_tokens)
        self._cache: dict[tuple[str, str | None], list[int]] = {}

    def ids(self, task: str, advantage: str | None) -> list[int]:
        key = (task, advantage)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        suffix = (
            [] if advantage is None else self.tokenizer.encode(format_prompt("", advantage), add_special_tokens=False)
        )
        room = self.max_tokens - len(bos) - len(suffix)
        if room < 1:
            raise ValueError(
                f"max_prompt_tokens={self.max_tokens} leaves no room for the task next to "
                f"the advantage text ({len(suffix)} tokens); raise it"
            )
        task_ids = self.tokenizer.encode(task, add_special_tokens=False)[:room]
        ids = bos + task_ids + suffix
        if len(self._cache) < 4096:
            self._cache[key] = ids
        return ids

    def __call__(
        self, tasks: Sequence[str], advantages: Sequence[str | None], device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if len(tasks) != len(advantages):
            raise ValueError(f"{len(tasks)} tasks but {len(advantages)} advantage values")
        rows = [self.ids(task, adv) for task, adv in zip(tasks, advantages)]
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = True
        return ids.to(device), mask.to(device)
