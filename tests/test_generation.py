"""The stage-2 generator: it learns grids, follows captions, resumes bit for bit, never samples an id
outside its slot's range, and the CLI refuses bad input in one line.

Everything is tiny (2x2 grids of the conftest tokenizer's layout: 12 tokens per image, a one-block
transformer of width 32) and the caption encoder is a fake with fixed hash-derived vectors, so the
file runs in seconds and needs no text model.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
from PIL import Image

from vqct_tokenizer.cli import main
from vqct_tokenizer.codebook.embedding import EncoderInfo
from vqct_tokenizer.generation import GeneratorConfig, TokenGenerator
from vqct_tokenizer.tokens import read_token_file
from vqct_tokenizer.tokens.files import StoredTokens, write_token_file

from conftest import benchmark_module, make_tokenizer

GRID = (2, 2)
TINY = {"width": 32, "depth": 1, "heads": 2, "dropout": 0.0, "lr": 3e-3, "warmup_steps": 0, "schedule": "constant",
        "weight_decay": 0.0, "log_every": 1000, "ckpt_every": 0, "text_encoder": "fake"}
CAPTIONS = {"img0.png": "a small yellow bird with black wings", "img1.png": "a large white bird with a long beak"}


class FakeEncoder:
    """A frozen 'sentence encoder': a fixed pseudo-random 8-d vector per text."""

    info = EncoderInfo(backend="test", id="fake", revision=None, dim=8, uses_prompts=False)

    def encode(self, texts):
        seeds = [int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little") for t in texts]
        return torch.stack([torch.randn(8, generator=torch.Generator().manual_seed(s)) for s in seeds])


@pytest.fixture(autouse=True)
def fake_text_encoder(monkeypatch):
    monkeypatch.setattr("vqct_tokenizer.generation.captions.load_text_encoder", lambda spec, device=None: FakeEncoder())


def random_grids(tok, n: int, seed: int) -> torch.Tensor:
    """(n, 2, 2, 3) valid ids of ``tok``'s layout."""
    g = torch.Generator().manual_seed(seed)
    cols = [torch.randint(grp.code_start, grp.code_end, (n, *GRID, grp.k), generator=g) for grp in tok.config.groups]
    return torch.cat(cols, -1)


def write_tokens(path, tok, model_dir, grids: torch.Tensor):
    write_token_file(path, StoredTokens(
        grids=list(grids), image_paths=[f"img{i}.png" for i in range(len(grids))], image_sizes=[(8, 8)] * len(grids),
        resized=True, model=str(model_dir), config_hash=tok.config.architecture_hash(),
        layout=tok.config.token_layout(GRID)))
    return path


def write_captions(path, captions: dict[str, str]):
    path.write_text("".join(f"{k}\t{v}\n" for k, v in captions.items()))
    return path


@pytest.fixture(scope="module")
def tiny_tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def two_grids(tiny_tok):
    return random_grids(tiny_tok, 2, seed=1)


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory, model_dir, tiny_tok, two_grids):
    """A generator trained on two grids, each with its own caption (and a 0.2 caption dropout)."""
    from _pytest.monkeypatch import MonkeyPatch

    from vqct_tokenizer.generation import train_generator

    root = tmp_path_factory.mktemp("gen-cond")
    with MonkeyPatch.context() as mp:
        mp.setattr("vqct_tokenizer.generation.captions.load_text_encoder", lambda spec, device=None: FakeEncoder())
        return train_generator(write_tokens(root / "tokens.pt", tiny_tok, model_dir, two_grids), root / "run",
                               captions=write_captions(root / "captions.tsv", CAPTIONS),
                               settings={**TINY, "steps": 150, "batch_size": 2, "caption_dropout": 0.2},
                               progress=False)


@pytest.fixture(scope="module")
def unconditional_run(tmp_path_factory, model_dir, tiny_tok, two_grids):
    from vqct_tokenizer.generation import train_generator

    root = tmp_path_factory.mktemp("gen-uncond")
    settings = {k: v for k, v in TINY.items() if k != "text_encoder"}
    return train_generator(write_tokens(root / "tokens.pt", tiny_tok, model_dir, two_grids), root / "run",
                           settings={**settings, "steps": 2, "batch_size": 2}, progress=False)


def tiny_generator(groups, grid=GRID, seed=0, **kw) -> TokenGenerator:
    torch.manual_seed(seed)
    layout = {"grid": list(grid), "groups": groups}
    return TokenGenerator(GeneratorConfig.from_layout(layout, width=32, depth=1, heads=2, **kw))


VQCT_GROUPS = [{"name": "adjective", "k": 2, "id_range": [0, 12]}, {"name": "noun", "k": 1, "id_range": [12, 32]}]
LAYOUTS = {
    "vqct": VQCT_GROUPS,
    "vq": [{"name": "code", "k": 1, "id_range": [0, 24]}],
    "shared": [{"name": "adjective", "k": 2, "id_range": [0, 32]}, {"name": "noun", "k": 1, "id_range": [0, 32]}],
}


# ---------------------------------------------------------------------------------------- the model
def test_overfits_one_grid_and_samples_it_back_greedily(tiny_tok):
    grid = random_grids(tiny_tok, 1, seed=3)
    model = tiny_generator(VQCT_GROUPS)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = model(grid).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(model.sample(1, temperature=0)[0], grid[0])
    assert model.bits_per_image(grid).item() < 1.0  # from log2 of the vocabulary (~45 bits) at the start


def test_cached_sampling_matches_the_full_forward():
    """Greedy sampling with the key/value cache picks, at every position, the argmax of what the
    full causal forward pass predicts from the same prefix."""
    model = tiny_generator(VQCT_GROUPS, text_dim=8, seed=1)
    text = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    grids = model.sample(3, text, temperature=0)
    hidden = model.hidden(grids, text)                                          # (3, 4, 3, 32)
    for g, cols, head in zip(model.config.groups, model._columns, model.heads):
        best = head(hidden[:, :, cols]).argmax(-1) + g.start                    # (3, 4, k_g)
        assert torch.equal(best, grids.reshape(3, 4, 3)[:, :, cols])


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_samples_never_hold_an_out_of_range_id(layout):
    groups = LAYOUTS[layout]
    model = tiny_generator(groups, grid=(3, 3))
    with torch.no_grad():  # skew every head towards its highest ids: an offset error would overflow
        for head in model.heads:
            head.bias.copy_(torch.linspace(0, 3, head.bias.numel()))
    grids = model.sample(64, temperature=5.0, generator=torch.Generator().manual_seed(0))
    col = 0
    for g in groups:
        part = grids[..., col:col + g["k"]]
        lo, hi = g["id_range"]
        assert int(part.min()) >= lo and int(part.max()) < hi, (g, int(part.min()), int(part.max()))
        assert len(part.unique()) > (hi - lo) // 2  # high temperature: the whole range is drawn from
        col += g["k"]


def test_top_k_keeps_the_likeliest_ids():
    model = tiny_generator(LAYOUTS["vq"])
    with torch.no_grad():
        model.heads[0].bias.copy_(torch.arange(24.0) * 0.01)
        model.heads[0].bias[[5, 9]] = 50.0
    grids = model.sample(32, temperature=3.0, top_k=2, generator=torch.Generator().manual_seed(0))
    assert set(grids.unique().tolist()) == {5, 9}


def test_generator_round_trips_through_its_files(tmp_path):
    model = tiny_generator(VQCT_GROUPS, text_dim=8)
    model.save_pretrained(tmp_path)
    loaded = TokenGenerator.from_pretrained(tmp_path)
    assert loaded.config == model.config
    text = torch.randn(8)
    assert torch.equal(loaded.sample(2, text, generator=torch.Generator().manual_seed(4)),
                       model.sample(2, text, generator=torch.Generator().manual_seed(4)))


def test_tokens_outside_the_layout_are_refused():
    model = tiny_generator(VQCT_GROUPS)
    bad = torch.zeros(1, *GRID, 3, dtype=torch.long)  # a noun slot holding adjective id 0
    with pytest.raises(ValueError, match=r"noun slots must be in \[12, 32\)"):
        model(bad)


# ---------------------------------------------------------------------------------------- training
def test_caption_conditioning_changes_the_samples(conditional_run, two_grids):
    """Same seed, two captions: each caption brings back its own image's grid."""
    from vqct_tokenizer.generation.captions import embed_captions

    gen = TokenGenerator.from_pretrained(conditional_run / "generator")
    samples = {}
    for i, caption in enumerate(CAPTIONS.values()):
        text = embed_captions([caption], gen.config.text_encoder, gen.config.text_normalize, progress=False)[0]
        samples[caption] = gen.sample(4, text, temperature=1.0, generator=torch.Generator().manual_seed(0))
        assert torch.equal(gen.sample(1, text, temperature=0)[0], two_grids[i])
    first, second = samples.values()
    assert not torch.equal(first, second)


def test_resume_is_bit_exact(tmp_path, model_dir, tiny_tok):
    """6 steps in one go == 3 steps, then --resume for 3 more (mid-epoch, with dropout and caption
    dropout drawing random numbers): same weights and optimizer state, bit for bit."""
    from vqct_tokenizer.generation import train_generator
    from vqct_tokenizer.training.checkpoint import load_checkpoint

    tokens = write_tokens(tmp_path / "tokens.pt", tiny_tok, model_dir, random_grids(tiny_tok, 5, seed=2))
    captions = write_captions(tmp_path / "captions.tsv", {f"img{i}.png": f"bird number {i}" for i in range(4)})
    settings = {**TINY, "steps": 6, "batch_size": 2, "dropout": 0.1, "caption_dropout": 0.3}
    train_generator(tokens, tmp_path / "whole", captions=captions, settings=settings, progress=False)
    train_generator(tokens, tmp_path / "split", captions=captions, settings=settings, max_steps=3, progress=False)
    assert load_checkpoint(tmp_path / "split")["step"] == 3
    train_generator(tokens, tmp_path / "split", captions=captions, resume=True, progress=False)
    whole, split = load_checkpoint(tmp_path / "whole"), load_checkpoint(tmp_path / "split")
    assert split["step"] == whole["step"] == 6
    for key, value in whole["model"].items():
        assert torch.equal(value, split["model"][key]), key
    for a, b in zip(whole["optimizer"]["state"].values(), split["optimizer"]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(TINY.get("seed", 0))  # the initialisation train_generator starts from
    init = TokenGenerator(GeneratorConfig.from_dict(whole["generator"])).state_dict()
    assert not torch.equal(whole["model"]["start"], init["start"])  # it trained at all


def test_resume_refuses_other_settings(tmp_path, unconditional_run):
    from vqct_tokenizer.generation import train_generator

    with pytest.raises(ValueError, match=r"width 32 \(run\) vs 64 \(now\)"):
        train_generator(unconditional_run.parent / "tokens.pt", unconditional_run, settings={"width": 64}, resume=True)


def test_captions_file_without_keys_is_explained(tmp_path, model_dir, tiny_tok, two_grids):
    from vqct_tokenizer.generation import train_generator

    tokens = write_tokens(tmp_path / "tokens.pt", tiny_tok, model_dir, two_grids)
    bare = tmp_path / "bare.txt"
    bare.write_text("a bird with a very long wing span\nthe long beaked bird\n")
    with pytest.raises(ValueError, match="line 1: expected IMAGE_KEY<TAB>CAPTION"):
        train_generator(tokens, tmp_path / "a", captions=bare, settings=TINY, progress=False)
    other = write_captions(tmp_path / "other.tsv", {"birds/0001.jpg": "a bird"})
    with pytest.raises(ValueError, match="must be the dataset's image paths, e.g. 'img0.png'"):
        train_generator(tokens, tmp_path / "b", captions=other, settings=TINY, progress=False)


# ---------------------------------------------------------------------------------------- CLI
def test_sample_cli_writes_a_grid_and_the_tokens(conditional_run, two_grids, model_dir, tiny_tok, tmp_path, capsys):
    out, tokens = tmp_path / "grid.png", tmp_path / "samples.pt"
    caption = CAPTIONS["img1.png"]
    assert main(["sample", str(conditional_run), "--caption", caption, "-n", "3", "-o", str(out), "--temperature", "0",
                 "--tokens-out", str(tokens), "--columns", "2", "--device", "cpu"]) == 0
    stored = read_token_file(tokens)
    assert all(torch.equal(g, two_grids[1]) for g in stored.grids)  # greedy: the caption's own grid
    tile = tiny_tok.decode(two_grids[1])
    grid = Image.open(out)
    assert grid.size == (2 * tile.width + 2, 2 * tile.height + 2)
    np.testing.assert_array_equal(np.asarray(grid)[:tile.height, :tile.width], np.asarray(tile))
    assert "3 sample(s)" in capsys.readouterr().out


def _fails(argv, capsys, message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def test_train_generator_missing_dataset(tmp_path, capsys):
    _fails(["train-generator", str(tmp_path / "nope"), "-o", str(tmp_path / "run")], capsys, "no manifest.json in")
    assert not (tmp_path / "run").exists()


def test_sample_caption_with_an_unconditional_generator(unconditional_run, tmp_path, capsys):
    _fails(["sample", str(unconditional_run), "--caption", "a bird", "-o", str(tmp_path / "g.png")], capsys,
           "this generator is unconditional")


def test_sample_with_a_tokenizer_of_another_layout(unconditional_run, tmp_path, capsys):
    other = tmp_path / "vq"
    make_tokenizer(quantizer="vq", num_codes=24, num_adjectives=0, num_nouns=0).save_pretrained(other)
    _fails(["sample", str(unconditional_run), "--model", str(other), "-o", str(tmp_path / "g.png")], capsys,
           "layout differs from tokenizer")


def test_sample_missing_generator(tmp_path, capsys):
    _fails(["sample", str(tmp_path), "-o", str(tmp_path / "g.png")], capsys, "neither a run folder")


def test_train_generator_refuses_an_existing_run_without_resume(unconditional_run, capsys):
    _fails(["train-generator", str(unconditional_run.parent / "tokens.pt"), "-o", str(unconditional_run)], capsys,
           "already exists and is not empty")


def test_bits_per_image_is_the_sum_of_token_nll(tiny_tok):
    model = tiny_generator(VQCT_GROUPS)
    grids = random_grids(tiny_tok, 2, seed=5)
    model.eval()
    assert torch.allclose(model.bits_per_image(grids), model(grids).sum(1) / math.log(2))


# ----------------------------------------------------------------------------- the generation benchmark
def test_benchmark_token_entropy_counts_each_group_over_its_own_slots():
    from types import SimpleNamespace

    bench = benchmark_module("generation")
    groups = [SimpleNamespace(name="adjective", k=2, code_start=0, code_end=8),
              SimpleNamespace(name="noun", k=1, code_start=8, code_end=40)]
    tok = SimpleNamespace(config=SimpleNamespace(groups=groups))
    g = torch.Generator().manual_seed(0)
    n = 400
    adjectives = torch.randint(0, 4, (n, 4, 4, 2), generator=g)        # 4 equally likely values: 2 bits
    nouns = torch.full((n, 4, 4, 1), 9)                                  # one value: 0 bits
    out = bench._token_entropy_bits(torch.cat([adjectives, nouns], -1), tok)
    assert out["marginal_entropy_bits_per_image"] == pytest.approx(16 * 2 * 2, rel=0.01)
    assert out["raw_bits_per_image"] == pytest.approx(16 * (2 * 3 + 5))


@pytest.mark.parametrize("diffs, verdict", [
    ([-5.0, -5.2, -4.9], "yes"),                 # lower is better: consistently lower
    ([5.0, 5.2, 4.9], "no, worse"),
    ([-1.0, -30.0, -2.0], "better in 3/3, not significant"),
    ([-1.0, 1.0, 0.5], "no clear difference"),
])
def test_benchmark_paired_verdicts(diffs, verdict):
    assert benchmark_module("generation").paired(diffs, lower_is_better=True).startswith(verdict + ":")
