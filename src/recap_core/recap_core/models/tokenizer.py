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
#: How a prompt is written: RECAP's own models, and the pretrained families' templates (docs/models.md).
PROMPT_TEMPLATES = ("recap", "pi0", "pi05", "smolvla")
#: pi0.5 writes the normalised state into its prompt as 256 bins over [-1, 1] (openpi, LeRobot 0.4).
STATE_BINS = 256
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


def discretise_state(state) -> list[int]:
    """pi0.5's state tokens: each normalised value's bin among ``STATE_BINS`` equal bins of [-1, 1] (values
    outside fall in the end bins' neighbours as ``np.digitize`` puts them: -1 below, 255 above)."""
    import numpy as np

    edges = np.linspace(-1.0, 1.0, STATE_BINS + 1)[:-1]
    return (np.digitize(np.asarray(state, dtype=np.float64), bins=edges) - 1).tolist()


def family_prompt(template: str, task: str, advantage: str | None, state_bins: Sequence[int] | None = None) -> str:
    """The text of a pretrained family's prompt with RECAP's advantage text.

    ``pi0`` / ``smolvla`` (LeRobot's: the task and a newline): ``"<task>\nAdvantage: positive\n"``;
    ``pi05`` (openpi's discrete-state prompt): ``"Task: <task>, State: 12 200 ...;\nAdvantage: positive;\nAction: "``.
    Without an advantage (the unconditional prompt) the advantage line is left out, giving the family's own prompt.
    """
    if advantage is not None and advantage not in ADVANTAGE_VALUES:
        raise ValueError(f"advantage must be 'positive', 'negative' or None, got {advantage!r}")
    if template in ("pi0", "smolvla"):
        text = task if advantage is None else format_prompt(task, advantage)
        return text if text.endswith("\n") else text + "\n"
    if template == "pi05":
        cleaned = task.strip().replace("_", " ").replace("\n", " ")
        head = f"Task: {cleaned}" if state_bins is None else f"Task: {cleaned}, State: {' '.join(map(str, state_bins))}"
        middle = "" if advantage is None else f"Advantage: {advantage};\n"
        return f"{head};\n{middle}Action: "
    raise ValueError(f"no family prompt template {template!r}; known: {PROMPT_TEMPLATES[1:]}")


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

    def __init__(self, tokenizer: PreTrainedTokenizerFast, max_tokens: int, template: str = "recap"):
        if template not in PROMPT_TEMPLATES:
            raise ValueError(f"prompt template must be one of {PROMPT_TEMPLATES}, got {template!r}")
        self.tokenizer = tokenizer
        self.max_tokens = int(max_tokens)
        self.template = template
        self._cache: dict[tuple, list[int]] = {}

    def family_ids(self, task: str, advantage: str | None, state_bins: tuple[int, ...] | None) -> list[int]:
        """A family prompt's ids, the tokenizer's own special tokens included, as LeRobot tokenizes it. Too long:
        the task is cut, never the advantage text or the template's end."""
        key = (task, advantage, state_bins)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        ids = self.tokenizer.encode(family_prompt(self.template, task, advantage, state_bins))
        if len(ids) > self.max_tokens:
            whole = len(ids)
            for cut in range(len(task) - 1, 0, -1):
                ids = self.tokenizer.encode(family_prompt(self.template, task[:cut], advantage, state_bins))
                if len(ids) <= self.max_tokens:
                    break
            else:
                raise ValueError(
                    f"max_prompt_tokens={self.max_tokens} cannot hold the {self.template} prompt without its task "
                    f"({whole} tokens with it); raise it"
                )
        if len(self._cache) < 4096:
            self._cache[key] = ids
        return ids

    def ids(self, task: str, advantage: str | None) -> list[int]:
        if self.template != "recap":
            return self.family_ids(task, advantage, None)
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
        self,
        tasks: Sequence[str],
        advantages: Sequence[str | None],
        device: torch.device | str = "cpu",
        states: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``states`` (the ``pi05`` template only): the normalised states ``[B, D]`` written into the prompts."""
        if len(tasks) != len(advantages):
            raise ValueError(f"{len(tasks)} tasks but {len(advantages)} advantage values")
        if self.template == "pi05":
            if states is None or len(states) != len(tasks):
                raise ValueError("the pi05 prompt writes the normalised state: give one state per task")
            bins = [tuple(discretise_state(s)) for s in states.detach().float().cpu().numpy()]
            rows = [self.family_ids(t, a, b) for t, a, b in zip(tasks, advantages, bins)]
        else:
            rows = [self.ids(task, adv) for task, adv in zip(tasks, advantages)]
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = True
        return ids.to(device), mask.to(device)
