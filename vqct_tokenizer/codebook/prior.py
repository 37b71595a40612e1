"""The codebook prior artifact: mined words, their edges, and their frozen text embeddings.

On disk a prior is a folder with two files:

``prior.json``
    ``format_version``; ``words`` (``adjectives`` and ``nouns``, each a list of ``[word, count]``
    in id order); ``edges`` (``[adjective, noun, count]``); and provenance: ``corpora``,
    ``text_encoder``, ``mining`` (min_count, tag sets, block-list), ``versions``, ``created``,
    ``build_seconds``.
``embeddings.safetensors``
    float32 tensors ``adjectives`` (A, E) and ``nouns`` (N, E), rows in the order of ``words``.

Token ids follow :meth:`CodebookPrior.vocab`: adjectives first (0..A-1), then nouns (A..A+N-1).
An adjective and a noun may be the same string ("white"); they are different nodes.
"""

from __future__ import annotations

import json
import os
import pathlib
from dataclasses import dataclass, field

import torch

from ..atomic import atomic_write

FORMAT_VERSION = 1
PRIOR_JSON = "prior.json"
EMBEDDINGS_FILE = "embeddings.safetensors"
DEFAULT_PRIOR_NAME = "minilm-cub-flowers-coco"

# keys of prior.json that become dataclass fields; everything else lands in CodebookPrior.meta
_CONTENT_KEYS = ("words", "edges")


@dataclass
class CodebookPrior:
    adjectives: list[str]
    nouns: list[str]
    adjective_counts: list[int]
    noun_counts: list[int]
    edges: list[tuple[str, str, int]]  # (adjective, noun, count)
    adjective_embeddings: torch.Tensor  # (A, E) float32
    noun_embeddings: torch.Tensor  # (N, E) float32
    meta: dict = field(default_factory=dict)  # everything else from prior.json

    @property
    def num_adjectives(self) -> int:
        return len(self.adjectives)

    @property
    def num_nouns(self) -> int:
        return len(self.nouns)

    @property
    def embedding_dim(self) -> int:
        return int(self.adjective_embeddings.shape[1])

    def edge_index(self) -> torch.Tensor:
        """LongTensor (num_edges, 2): (adjective row in [0, A), noun row in [0, N))."""
        adjective_row = {word: i for i, word in enumerate(self.adjectives)}
        noun_row = {word: i for i, word in enumerate(self.nouns)}
        rows = [(adjective_row[a], noun_row[n]) for a, n, _ in self.edges]
        return torch.tensor(rows, dtype=torch.long).reshape(len(rows), 2)

    def edge_weight(self) -> torch.Tensor:
        """FloatTensor (num_edges,): how often each adjective directly preceded the noun."""
        return torch.tensor([float(c) for _, _, c in self.edges], dtype=torch.float32)

    def vocab(self) -> list[str]:
        """Adjectives then nouns; the index is the token id."""
        return list(self.adjectives) + list(self.nouns)

    def validate(self) -> None:
        """Raise ValueError if the words, counts, edges and embeddings do not fit together."""
        _check_words("adjective", self.adjectives, self.adjective_counts)
        _check_words("noun", self.nouns, self.noun_counts)
        _check_edges(self.edges, set(self.adjectives), set(self.nouns))
        _check_embeddings("adjective", self.adjective_embeddings, len(self.adjectives))
        _check_embeddings("noun", self.noun_embeddings, len(self.nouns))
        if self.adjective_embeddings.shape[1] != self.noun_embeddings.shape[1]:
            raise ValueError(
                f"adjective embeddings are {self.adjective_embeddings.shape[1]}-d but noun "
                f"embeddings are {self.noun_embeddings.shape[1]}-d"
            )


# ----------------------------------------------------------------------------- validation


def _check_words(pos: str, words: list, counts: list) -> None:
    if len(words) != len(counts):
        raise ValueError(f"{len(words)} {pos}s but {len(counts)} {pos} counts")
    seen: set[str] = set()
    for word, count in zip(words, counts):
        if not isinstance(word, str) or not word:
            raise ValueError(f"{pos} {word!r} is not a non-empty string")
        if word in seen:
            raise ValueError(f"{pos} {word!r} appears twice")
        seen.add(word)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"{pos} {word!r} has invalid count {count!r}")


def _check_edges(edges: list, adjectives: set[str], nouns: set[str]) -> None:
    for edge in edges:
        if not (isinstance(edge, (list, tuple)) and len(edge) == 3):
            raise ValueError(f"edge {edge!r} is not [adjective, noun, count]")
        adjective, noun, count = edge
        if adjective not in adjectives:
            raise ValueError(f"edge {list(edge)!r} names unknown adjective {adjective!r}")
        if noun not in nouns:
            raise ValueError(f"edge {list(edge)!r} names unknown noun {noun!r}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"edge {list(edge)!r} has invalid count {count!r}")


def _check_embeddings(pos: str, tensor, rows: int) -> None:
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 2:
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise ValueError(f"{pos} embeddings must be a 2-D tensor, got {shape}")
    if tensor.shape[0] != rows:
        raise ValueError(f"{pos} embeddings have {tensor.shape[0]} rows but there are {rows} {pos}s")
    if tensor.dtype != torch.float32:
        raise ValueError(f"{pos} embeddings must be float32, got {tensor.dtype}")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{pos} embeddings contain NaN or infinite values")


# ----------------------------------------------------------------------------- save / load
def prior_to_json(prior: CodebookPrior) -> dict:
    """The prior.json document: words and edges first, then the metadata."""
    document = {
        "format_version": FORMAT_VERSION,
        "words": {
            "adjectives": [[w, int(c)] for w, c in zip(prior.adjectives, prior.adjective_counts)],
            "nouns": [[w, int(c)] for w, c in zip(prior.nouns, prior.noun_counts)],
        },
        "edges": [[a, n, int(c)] for a, n, c in prior.edges],
    }
    for key, value in prior.meta.items():
        if key not in document:
            document[key] = value
    return document


def _format_json(value, level: int = 0) -> str:
    """Indented JSON with each flat list on one line: one word or edge per line keeps the file
    small (a third of indent-everything) and its diffs readable."""
    pad = " " * level
    if isinstance(value, dict) and value:
        items = [f"{pad} {json.dumps(k, ensure_ascii=False)}: {_format_json(v, level + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and any(isinstance(v, (list, dict)) for v in value):
        items = [f"{pad} {_format_json(v, level + 1)}" for v in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(value, ensure_ascii=False)


def save_prior(prior: CodebookPrior, out_dir: str | os.PathLike) -> None:
    """Write ``out_dir/prior.json`` and ``out_dir/embeddings.safetensors`` (created if needed)."""
    from safetensors.torch import save_file

    prior.validate()
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {
        "adjectives": prior.adjective_embeddings.detach().cpu().contiguous(),
        "nouns": prior.noun_embeddings.detach().cpu().contiguous(),
    }
    text = _format_json(prior_to_json(prior)) + "\n"

    def write_json(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    # embeddings first: a prior.json on disk then always has its embeddings beside it
    atomic_write(out / EMBEDDINGS_FILE, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    atomic_write(out / PRIOR_JSON, write_json)


def _resolve(path: str | os.PathLike) -> tuple[pathlib.Path, pathlib.Path]:
    path = pathlib.Path(path)
    if path.is_dir():
        folder, json_path = path, path / PRIOR_JSON
    else:
        folder, json_path = path.parent, path
    if not json_path.is_file():
        raise FileNotFoundError(f"no codebook prior at {path} ({json_path.name} not found)")
    return folder, json_path


def _word_list(document: dict, pos: str, source: pathlib.Path) -> tuple[list[str], list[int]]:
    entries = document["words"].get(pos) if isinstance(document.get("words"), dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{source}: 'words.{pos}' must be a list of [word, count]")
    words, counts = [], []
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 2):
            raise ValueError(f"{source}: 'words.{pos}' entry {entry!r} is not [word, count]")
        words.append(entry[0])
        counts.append(entry[1])
    return words, counts


def load_prior(path: str | os.PathLike) -> CodebookPrior:
    """Load and validate a prior from its folder (or its prior.json)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder, json_path = _resolve(path)
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{json_path}: not valid JSON ({e})") from e
    if not isinstance(document, dict):
        raise ValueError(f"{json_path}: expected a JSON object")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{json_path}: unsupported format_version {version!r} (expected {FORMAT_VERSION})")

    adjectives, adjective_counts = _word_list(document, "adjectives", json_path)
    nouns, noun_counts = _word_list(document, "nouns", json_path)
    edges = document.get("edges")
    if not isinstance(edges, list):
        raise ValueError(f"{json_path}: 'edges' must be a list of [adjective, noun, count]")

    embeddings_path = folder / EMBEDDINGS_FILE
    if not embeddings_path.is_file():
        raise FileNotFoundError(f"{embeddings_path} not found (a prior needs both {PRIOR_JSON} and {EMBEDDINGS_FILE})")
    try:
        tensors = load_file(str(embeddings_path))
    except SafetensorError as e:
        raise ValueError(f"{embeddings_path}: not a valid safetensors file ({e})") from e
    for name in ("adjectives", "nouns"):
        if name not in tensors:
            raise ValueError(f"{embeddings_path}: missing tensor {name!r}")

    prior = CodebookPrior(
        adjectives=adjectives,
        nouns=nouns,
        adjective_counts=adjective_counts,
        noun_counts=noun_counts,
        edges=[tuple(e) if isinstance(e, list) else e for e in edges],
        adjective_embeddings=tensors["adjectives"],
        noun_embeddings=tensors["nouns"],
        meta={k: v for k, v in document.items() if k not in _CONTENT_KEYS},
    )
    try:
        prior.validate()
    except ValueError as e:
        raise ValueError(f"{json_path.parent}: invalid codebook prior: {e}") from e
    return prior


def default_prior_path() -> pathlib.Path:
    """The prior shipped with the package (all-MiniLM-L6-v2 over cub + flowers + coco_val2017)."""
    return pathlib.Path(__file__).resolve().parent / "priors" / DEFAULT_PRIOR_NAME

