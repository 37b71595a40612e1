"""Training side: codebook transfer network, losses, discriminator, trainer, export.

Imported only by ``vqct train`` / ``vqct export`` and by users who train; never by the slim tokenizer.
"""
