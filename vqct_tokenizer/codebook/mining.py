"""Part-of-speech mining of captions: the adjective and noun vocabulary and their co-occurrence edges.

The procedure follows the VQCT paper's official code:

* each caption is split with ``nltk.word_tokenize``, every token is lowercased, and the token
  sequence is tagged with ``nltk.pos_tag`` (NLTK's averaged-perceptron tagger);
* tokens tagged NN/NNS/NNP/NNPS are nouns, lemmatized by WordNet as nouns ("wings" -> "wing");
* tokens tagged JJ are adjectives, kept as written;
* an adjective immediately followed by a noun adds one to the (adjective, noun) edge count;
* a word is kept when it was seen **more than** ``min_count`` times in that role.

Unlike the official code, a word that occurs both as an adjective and as a noun ("white",
"orange") gives two separate nodes, one per role, each with its own count.

Tagging is the bottleneck (about 1 ms a caption), so the miner does as little of it as it can and
spreads the rest over the cores:

* identical captions are tagged once and counted with their multiplicity. Caption corpora repeat
  themselves (a fifth of cub+flowers+coco_val2017 are exact repeats), and tagging is a pure function
  of the caption string, so this is exactly equivalent;
* distinct captions are tagged in chunks by a pool of worker processes;
* workers only count surface forms; lemmatization happens once per distinct noun in the parent.
  That is exactly equivalent too (the lemma is a function of the word alone) and keeps WordNet,
  which takes seconds to load, out of the workers.

The result does not depend on the number of workers, the chunking or deduplication: counts are
summed, and all lists are sorted by (descending count, word).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial

from ..runtime import progress_bar

NOUN_TAGS: tuple[str, ...] = ("NN", "NNS", "NNP", "NNPS")
ADJECTIVE_TAGS: tuple[str, ...] = ("JJ",)
DEFAULT_MIN_COUNT = 10
DEFAULT_CHUNK_SIZE = 1000

NLTK_DOWNLOAD_COMMAND = "python -m nltk.downloader averaged_perceptron_tagger_eng wordnet punkt_tab"

# (nltk.data resource name, what it is for): everything word_tokenize, pos_tag and WordNet need.
_NLTK_RESOURCES: tuple[tuple[str, str], ...] = (
    ("tokenizers/punkt_tab/english/", "punkt_tab (word_tokenize)"),
    ("taggers/averaged_perceptron_tagger_eng/", "averaged_perceptron_tagger_eng (pos_tag)"),
    ("corpora/wordnet", "wordnet (noun lemmatization)"),
)


class NltkDataMissingError(RuntimeError):
    """NLTK is installed but one of its data packages cannot be found."""


def ensure_nltk_data() -> None:
    """Fail early, with instructions, when NLTK or its data packages are missing.

    NLTK's own LookupError arrives from deep inside a worker process, halfway through a corpus;
    checking up front gives one clear message instead.
    """
    try:
        import nltk
    except ImportError as e:
        raise NltkDataMissingError(
            "mining captions needs NLTK: pip install 'vqct-tokenizer[train]' (or pip install nltk)"
        ) from e
    missing = []
    for resource, purpose in _NLTK_RESOURCES:
        try:
            nltk.data.find(resource)
        except LookupError:
            missing.append(purpose)
    if missing:
        searched = ", ".join(str(p) for p in nltk.data.path) or "(none)"
        raise NltkDataMissingError(
            f"NLTK data not found: {', '.join(missing)}. Download it with "
            f"`{NLTK_DOWNLOAD_COMMAND}`, or point the NLTK_DATA environment variable at a folder "
            f"that holds it. Searched: {searched}"
        )


@dataclass(frozen=True)
class MiningOptions:
    """What counts as an adjective or a noun, and which words are kept."""

    min_count: int = DEFAULT_MIN_COUNT  # keep words seen strictly more often than this
    adjective_tags: tuple[str, ...] = ADJECTIVE_TAGS
    noun_tags: tuple[str, ...] = NOUN_TAGS
    # words never to keep, compared with the lowercased adjective and the lemmatized noun
    block_list: frozenset[str] = frozenset()
    # keep a word only if WordNet knows it in that part of speech: drops caption typos ("whtie",
    # "wiht") and tagger debris ("s", "ish"). False is the paper's unchecked behaviour.
    vocabulary_check: bool = True

    def __post_init__(self) -> None:
        if self.min_count < 0:
            raise ValueError(f"min_count must be >= 0, got {self.min_count}")
        if not self.adjective_tags or not self.noun_tags:
            raise ValueError("adjective_tags and noun_tags must not be empty")
        overlap = set(self.adjective_tags) & set(self.noun_tags)
        if overlap:
            raise ValueError(f"tags cannot be both adjective and noun tags: {sorted(overlap)}")


@dataclass
class SurfaceCounts:
    """Counts of lowercased surface forms in one batch of captions (before lemmatization)."""

    adjectives: Counter = field(default_factory=Counter)
    nouns: Counter = field(default_factory=Counter)
    pairs: Counter = field(default_factory=Counter)  # (adjective, surface noun) -> count
    num_captions: int = 0

    def add(self, other: SurfaceCounts) -> None:
        self.adjectives.update(other.adjectives)
        self.nouns.update(other.nouns)
        self.pairs.update(other.pairs)
        self.num_captions += other.num_captions


@dataclass
class MiningResult:
    """Kept words and edges, sorted by (descending count, word)."""

    adjectives: list[str]
    adjective_counts: list[int]
    nouns: list[str]
    noun_counts: list[int]
    edges: list[tuple[str, str, int]]  # (adjective, noun lemma, count), both endpoints kept
    num_captions: int
    options: MiningOptions
    workers: int
    seconds: float
    # distinct adjectives, noun lemmas and (adjective, noun lemma) pairs before the threshold
    candidates: dict[str, int] = field(default_factory=dict)
    tagged_captions: int = 0  # captions actually tagged: the distinct ones when deduplicating


def tag_caption(caption: str) -> list[tuple[str, str]]:
    """Tokenize, lowercase and POS-tag one caption, as the paper's code does."""
    import nltk

    tokens = [token.lower() for token in nltk.word_tokenize(caption)]
    return nltk.pos_tag(tokens)


def count_captions(
    captions: Iterable[str] | Iterable[tuple[str, int]],
    adjective_tags: Sequence[str] = ADJECTIVE_TAGS,
    noun_tags: Sequence[str] = NOUN_TAGS,
) -> SurfaceCounts:
    """Count adjectives, nouns (surface forms) and adjective-noun bigrams in ``captions``.

    An item may be a caption or a ``(caption, multiplicity)`` pair: the caption is tagged once and
    everything in it counts ``multiplicity`` times.
    """
    adjective_tags, noun_tags = frozenset(adjective_tags), frozenset(noun_tags)
    counts = SurfaceCounts()
    for item in captions:
        caption, times = (item, 1) if isinstance(item, str) else item
        tagged = tag_caption(caption)
        counts.num_captions += times
        for i, (word, tag) in enumerate(tagged):
            if tag in noun_tags:
                counts.nouns[word] += times
            elif tag in adjective_tags:
                counts.adjectives[word] += times
                if i + 1 < len(tagged) and tagged[i + 1][1] in noun_tags:
                    counts.pairs[(word, tagged[i + 1][0])] += times
    return counts


def deduplicate(captions: Iterable[str]) -> list[tuple[str, int]]:
    """Distinct captions with their multiplicities, in order of first appearance."""
    return list(Counter(captions).items())


def _warm_up_nltk() -> None:
    """Load punkt and the tagger once, so each chunk does not pay for it (they are cached)."""
    tag_caption("a small warm-up caption.")


def _chunks(items: Sequence, size: int) -> list[Sequence]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _count_parallel(
    captions: Sequence[str] | Sequence[tuple[str, int]],
    options: MiningOptions,
    workers: int,
    chunk_size: int,
    progress: bool,
    start_method: str | None,
) -> SurfaceCounts:
    count_chunk = partial(
        count_captions, adjective_tags=options.adjective_tags, noun_tags=options.noun_tags
    )
    chunks = _chunks(captions, chunk_size)
    total = SurfaceCounts()
    # the bar counts distinct captions tagged (all of them when not deduplicated)
    bar = progress_bar(len(captions), "tagging captions", unit="cap", enabled=progress)
    if workers == 1:
        for chunk in chunks:
            total.add(count_chunk(chunk))
            bar.update(len(chunk))
    else:
        if start_method is None:
            # fork shares the already-loaded tagger with the workers; spawn where fork is unavailable
            methods = multiprocessing.get_all_start_methods()
            start_method = "fork" if "fork" in methods else "spawn"
        if start_method == "fork":
            _warm_up_nltk()
        context = multiprocessing.get_context(start_method)
        # WordNet takes seconds to load and is only needed afterwards, by finalize_counts. Loading
        # it in a thread here overlaps that with the tagging instead of adding to the wall time.
        # The thread starts after the pool forks, so no worker inherits a half-loaded WordNet.
        with context.Pool(workers, initializer=_warm_up_nltk) as pool:
            loader = threading.Thread(target=_load_wordnet, daemon=True)
            loader.start()
            # Unordered is fine: summing counts does not depend on the order chunks finish in.
            for counts, chunk_len in pool.imap_unordered(partial(_count_and_size, count_chunk), chunks):
                total.add(counts)
                bar.update(chunk_len)
        loader.join()
    bar.close()
    return total


def _count_and_size(count_chunk, chunk: Sequence) -> tuple[SurfaceCounts, int]:
    return count_chunk(chunk), len(chunk)


def _load_wordnet() -> None:
    from nltk.corpus import wordnet

    wordnet.ensure_loaded()


def _lemmatizer():
    from nltk.corpus import wordnet
    from nltk.stem import WordNetLemmatizer

    lemmatizer = WordNetLemmatizer()
    return lambda word: lemmatizer.lemmatize(word, wordnet.NOUN)


def _sorted_items(counts: Counter) -> list[tuple]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def finalize_counts(surface: SurfaceCounts, options: MiningOptions) -> tuple[list, list, list, dict]:
    """Lemmatize nouns, apply the threshold and block-list, and order everything deterministically.

    Returns (adjectives, nouns, edges, candidates): lists of (word, count) and
    (adjective, noun, count), and the numbers of distinct words and pairs before filtering.
    """
    lemmatize = _lemmatizer()
    lemma_of = {word: lemmatize(word) for word in surface.nouns}

    noun_counts: Counter = Counter()
    for word, count in surface.nouns.items():
        noun_counts[lemma_of[word]] += count
    pair_counts: Counter = Counter()
    for (adjective, noun), count in surface.pairs.items():
        pair_counts[(adjective, lemma_of[noun])] += count

    known = _wordnet_knows() if options.vocabulary_check else (lambda word, pos: True)
    dropped: dict[str, list[str]] = {"adjectives": [], "nouns": []}

    def keep(counts: Counter, pos: str, group: str) -> list[tuple[str, int]]:
        kept = []
        for word, count in _sorted_items(counts):
            if count <= options.min_count or word in options.block_list:
                continue
            if known(word, pos):
                kept.append((word, count))
            else:
                dropped[group].append(word)
        return kept

    adjectives, nouns = keep(surface.adjectives, "a", "adjectives"), keep(noun_counts, "n", "nouns")
    kept_adjectives = {word for word, _ in adjectives}
    kept_nouns = {word for word, _ in nouns}
    edges = [
        (adjective, noun, count)
        for (adjective, noun), count in _sorted_items(pair_counts)
        if adjective in kept_adjectives and noun in kept_nouns
    ]
    candidates = {
        "adjectives": len(surface.adjectives),
        "nouns": len(noun_counts),
        "pairs": len(pair_counts),
        "dropped_by_vocabulary_check": dropped,
    }
    return adjectives, nouns, edges, candidates


def _wordnet_knows():
    """(word, pos) -> whether WordNet has a synset for it; adjectives include satellite adjectives."""
    from nltk.corpus import wordnet

    return lambda word, pos: bool(wordnet.synsets(word, pos=pos))


def default_workers() -> int:
    """All the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def mine_captions(
    captions: Sequence[str],
    options: MiningOptions | None = None,
    *,
    workers: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = True,
    start_method: str | None = None,
    deduplicate_captions: bool = True,
) -> MiningResult:
    """Mine the adjective/noun vocabulary and edges of ``captions``.

    ``workers`` defaults to every available core; 1 runs in this process. The result is the same
    for any ``workers``, ``chunk_size`` and ``deduplicate_captions`` (which only saves work: off,
    every caption is tagged, as the paper's code does).
    """
    options = options or MiningOptions()
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    ensure_nltk_data()
    start = time.perf_counter()
    items = deduplicate(captions) if deduplicate_captions else list(captions)
    # No point starting more processes than there are chunks.
    workers = min(workers, max(1, -(-len(items) // chunk_size)))
    surface = _count_parallel(items, options, workers, chunk_size, progress, start_method)
    adjectives, nouns, edges, candidates = finalize_counts(surface, options)
    seconds = time.perf_counter() - start

    return MiningResult(
        adjectives=[w for w, _ in adjectives],
        adjective_counts=[c for _, c in adjectives],
        nouns=[w for w, _ in nouns],
        noun_counts=[c for _, c in nouns],
        edges=edges,
        num_captions=surface.num_captions,
        options=options,
        workers=workers,
        seconds=seconds,
        candidates=candidates,
        tagged_captions=len(items),
    )
