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
