"""Tokenize a whole dataset into resumable shards, and read the result back.

Kept so that ``from vqct_tokenizer.dataset import encode_dataset, load_token_dataset`` goes on
working; the code lives in ``vqct_tokenizer.tokens`` (``dataset_writer``, ``dataset_reader``,
``shards`` for the folder format, ``layout`` for what the ids mean).

    from vqct_tokenizer.dataset import encode_dataset, load_token_dataset
    encode_dataset("images/", "tokens/", tokenizer="vqct-open-f8")
    ds = load_token_dataset("tokens/")
    ds[0], ds["cat/001.jpg"], len(ds)            # LongTensor (h, w, k+1), like VQCTTokenizer.encode
"""

from __future__ import annotations

from .tokens.dataset_reader import TokenDataset, TokenFileDataset, load_token_dataset
from .tokens.dataset_writer import SHARD_SLEEP_ENV, EncodeResult, encode_dataset, list_inputs
from .tokens.layout import token_dtype, token_layout
from .tokens.shards import FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME, SETTINGS_NAME, shard_name, write_manifest

__all__ = ["EncodeResult", "FORMAT_NAME", "FORMAT_VERSION", "MANIFEST_NAME", "SETTINGS_NAME", "SHARD_SLEEP_ENV",
           "TokenDataset", "TokenFileDataset", "encode_dataset", "list_inputs", "load_token_dataset", "shard_name",
           "token_dtype", "token_layout", "write_manifest"]
