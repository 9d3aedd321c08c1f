"""Tiny released checkpoint suites for the tests: a model of a real architecture (transformers'), trained
for a few steps on the embedded corpus, saved with `save_pretrained` as one revision per step (the
names a suite's branches have: step0, step1, ...), with a byte-level BPE tokenizer trained on the same
corpus. Served by tests/fakehub.py, or read as a local folder."""

from __future__ import annotations

from pathlib import Path

import torch

from layerprobe.data import text

CORPUS = 40  # pydoc documents the tokenizer and the training see


def tokenizer(vocabulary: int = 300):
    """A byte-level BPE tokenizer of `vocabulary` ids trained on the pydoc corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocabulary, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator([t for _, t in text.embedded_documents()[:CORPUS]], trainer)
    return bpe


def gpt_neox(vocabulary: int = 320, layers: int = 2, **overrides):
    from transformers import GPTNeoXConfig

    settings = dict(
        vocab_size=vocabulary,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        rotary_pct=0.5,
        use_parallel_residual=True,
        tie_word_embeddings=False,
    )
    return GPTNeoXConfig(**{**settings, **overrides})


def suite(folder: Path, config, steps: list[int], bpe=None, seed: int = 0, context: int = 16) -> list[str]:
    """Train a model of `config` from its initialization (seeded) with AdamW for max(steps) steps on the
    corpus's tokens, saving revision `step{s}` into folder/step{s}/ at each of `steps`; the revisions' names."""
    from transformers import AutoModelForCausalLM

    bpe = bpe or tokenizer()
    ids = text.tokens(text.embedded_documents()[:CORPUS], bpe, limit=4096)
    batches = ids[: len(ids) // (context + 1) * (context + 1)].view(-1, context + 1)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    names = []
    for step in range(max(steps) + 1):
        if step in steps:
            names.append(f"step{step}")
            target = Path(folder) / names[-1]
            model.save_pretrained(target)
            bpe.save(str(target / "tokenizer.json"))
        batch = batches[(step * 8) % len(batches) :][:8]
        loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return names
