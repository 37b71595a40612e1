"""Codebook construction (training side): caption mining, word embedding, the prior artifact.

Never imported by the slim tokenizer.
"""
