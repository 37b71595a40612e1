"""Build a codebook prior end to end: read captions, mine words, embed them, save, summarise."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from ..runtime import library_versions
from .captions import load_corpus
from .embedding import (
    DEFAULT_ADJECTIVE_PROMPT,
    DEFAULT_BATCH_SIZE,
    DEFAULT_NOUN_PROMPT,
    check_prompt,
    embed_words,
    load_text_encoder,
    warn_unknown_words,
)
from .mining import ADJECTIVE_TAGS, DEFAULT_MIN_COUNT, NOUN_TAGS, MiningOptions, mine_captions
from .prior import FORMAT_VERSION, CodebookPrior, save_prior


def read_block_list(path: str | os.PathLike) -> frozenset[str]:
    """Words never to keep: one per line, lowercased; blank lines and ``#`` comments are ignored."""
    words = set()
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        word = line.split("#", 1)[0].strip().lower()
        if word:
            words.add(word)
    return frozenset(words)


# Everything that can change the words or the vectors. prior.json has always said "vqct_tokenizer"
# for the distribution "vqct-tokenizer"; the key stays so priors compare across versions.
VERSIONED_PACKAGES = ("vqct-tokenizer", "nltk", "torch", "transformers", "safetensors")


def prior_versions() -> dict[str, str | None]:
    """The versions block of prior.json, in its usual order (Python last)."""
    versions = library_versions(VERSIONED_PACKAGES)
    python = versions.pop("python")
    return {**{name.replace("-", "_"): version for name, version in versions.items()}, "python": python}


def build_prior(
    caption_paths: Sequence[str | os.PathLike],
    text_encoder: str = "minilm",
    out_dir: str | os.PathLike | None = None,
    *,
    min_count: int = DEFAULT_MIN_COUNT,
    workers: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | None = "cpu",
    normalize: bool | None = None,
    adjective_prompt: str = DEFAULT_ADJECTIVE_PROMPT,
    noun_prompt: str = DEFAULT_NOUN_PROMPT,
    block_list: Iterable[str] = (),
    adjective_tags: Sequence[str] = ADJECTIVE_TAGS,
    noun_tags: Sequence[str] = NOUN_TAGS,
    revision: str | None = None,
    progress: bool = True,
    verbose: bool = True,
    vocabulary_check: bool = True,
) -> CodebookPrior:
    """Mine ``caption_paths`` and embed the words with ``text_encoder``; save to ``out_dir`` if given.

    ``normalize=None`` follows the encoder's own pipeline (all-MiniLM-L6-v2 L2-normalises its
    sentence embeddings; CLIP's projected features and GloVe are used as they are).
    """
    if not caption_paths:
        raise ValueError("give at least one caption file or folder")
    started = time.perf_counter()
    options = MiningOptions(
        min_count=min_count,
        adjective_tags=tuple(adjective_tags),
        noun_tags=tuple(noun_tags),
        block_list=frozenset(w.lower() for w in block_list),
        vocabulary_check=vocabulary_check,
    )
    # Check the prompts before minutes of mining, not after.
    for prompt in (adjective_prompt, noun_prompt):
        check_prompt(prompt)

    corpora = [load_corpus(path) for path in caption_paths]
    captions = [caption for corpus in corpora for caption in corpus.captions]
    read_done = time.perf_counter()
    _log(verbose, f"read {len(captions):,} captions from {len(corpora)} corpora")

    mined = mine_captions(captions, options, workers=workers, progress=progress)
    mine_done = time.perf_counter()
    _log(verbose, f"mined in {mined.seconds:.1f}s with {mined.workers} worker(s); "
                  f"{mined.tagged_captions:,} distinct of {mined.num_captions:,} captions tagged")
    if options.vocabulary_check:
        dropped = mined.candidates["dropped_by_vocabulary_check"]
        _log(verbose, f"vocabulary check (WordNet) dropped {len(dropped['adjectives'])} adjectives and "
                      f"{len(dropped['nouns'])} nouns seen more than {options.min_count} times, e.g. "
                      f"{', '.join((dropped['adjectives'] + dropped['nouns'])[:12])}")

    encoder = load_text_encoder(text_encoder, device=device, revision=revision)
    normalize = encoder.info.default_normalize if normalize is None else normalize
    embed = dict(batch_size=batch_size, normalize=normalize, progress=progress)
    adjective_embeddings = embed_words(encoder, mined.adjectives, adjective_prompt, desc="adjectives", **embed)
    noun_embeddings = embed_words(encoder, mined.nouns, noun_prompt, desc="nouns", **embed)
    warn_unknown_words(encoder)
    embed_done = time.perf_counter()

    info = encoder.info
    meta = {
        "format_version": FORMAT_VERSION,
        "corpora": [corpus.provenance() for corpus in corpora],
        "num_captions": mined.num_captions,
        "text_encoder": {
            "backend": info.backend,
            "id": info.id,
            "revision": info.revision,
            "dim": info.dim,
            # GloVe embeds bare words, so recording prompts there would misdescribe the vectors
            "prompts": {"adjective": adjective_prompt, "noun": noun_prompt} if info.uses_prompts else None,
            "normalize": bool(normalize),
            **info.notes,
        },
        "mining": {
            "min_count": options.min_count,
            "adjective_tags": list(options.adjective_tags),
            "noun_tags": list(options.noun_tags),
            "block_list": sorted(options.block_list),
            "vocabulary_check": options.vocabulary_check,
            "tokenizer": "nltk.word_tokenize + lowercase",
            "tagger": "nltk.pos_tag (averaged perceptron, eng)",
            "noun_lemmatizer": "WordNetLemmatizer (noun)",
            # distinct words and adjective-noun pairs seen before the threshold
            "candidates": mined.candidates,
        },
        "versions": prior_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": {
            "read": round(read_done - started, 2),
            "mine": round(mine_done - read_done, 2),
            "embed": round(embed_done - mine_done, 2),
            "total": round(embed_done - started, 2),
        },
        "workers": mined.workers,
    }
    prior = CodebookPrior(
        adjectives=mined.adjectives,
        nouns=mined.nouns,
        adjective_counts=mined.adjective_counts,
        noun_counts=mined.noun_counts,
        edges=mined.edges,
        adjective_embeddings=adjective_embeddings,
        noun_embeddings=noun_embeddings,
        meta=meta,
    )
    if out_dir is not None:
        save_prior(prior, out_dir)
        _log(verbose, f"saved to {out_dir}")
    _log(verbose, format_summary(prior))
    return prior


def format_summary(prior: CodebookPrior, top: int = 10) -> str:
    """A few lines for humans: sizes, the most frequent words and edges, and the time taken."""

    def top_words(words: list[str], counts: list[int]) -> str:
        return ", ".join(f"{w} ({c:,})" for w, c in zip(words[:top], counts[:top])) or "-"

    encoder = prior.meta.get("text_encoder", {})
    seconds = prior.meta.get("build_seconds", {})
    edges = ", ".join(f"{a} {n} ({c:,})" for a, n, c in prior.edges[:top]) or "-"
    lines = [
        f"codebook prior: A={prior.num_adjectives} adjectives, N={prior.num_nouns} nouns, "
        f"{len(prior.edges):,} edges, {prior.embedding_dim}-d embeddings",
        f"  captions:   {prior.meta.get('num_captions', '?')}",
        f"  encoder:    {encoder.get('backend')} {encoder.get('id')} ({encoder.get('revision')})"
        f", normalize={encoder.get('normalize')}",
        f"  adjectives: {top_words(prior.adjectives, prior.adjective_counts)}",
        f"  nouns:      {top_words(prior.nouns, prior.noun_counts)}",
        f"  edges:      {edges}",
    ]
    if seconds:
        lines.append(
            f"  time:       {seconds.get('total', 0):.1f}s (read {seconds.get('read', 0):.1f}s, "
            f"mine {seconds.get('mine', 0):.1f}s, embed {seconds.get('embed', 0):.1f}s)"
        )
    return "\n".join(lines)


def _log(verbose: bool, message: str) -> None:
    if verbose:
        print(message, flush=True)
