"""Token grids on disk: one layout, one token-file format, one tokenized-dataset format.

    layout.py           VQCTConfig.token_layout(): what each id of a (h, w, k+1) grid means
    files.py            token files of ``vqct encode`` (.pt, .json, .npy): read, write, check
    shards.py           the folder of ``encode_dataset``: names, JSON, shard tensors, manifest
    dataset_writer.py   encode_dataset: resumable, torchrun-aware tokenization into shards
    dataset_reader.py   load_token_dataset: a folder of shards or a token file, by index or path
"""

from .dataset_reader import TokenDataset, TokenFileDataset, load_token_dataset
from .dataset_writer import SHARD_SLEEP_ENV, EncodeResult, encode_dataset, list_inputs
from .files import StoredTokens, check_same_model, encoded_tokens, read_token_file, write_token_file
from .layout import layout_differences, token_dtype, token_layout

__all__ = ["EncodeResult", "SHARD_SLEEP_ENV", "StoredTokens", "TokenDataset", "TokenFileDataset", "check_same_model",
           "encode_dataset", "encoded_tokens", "layout_differences", "list_inputs", "load_token_dataset",
           "read_token_file", "token_dtype", "token_layout", "write_token_file"]
