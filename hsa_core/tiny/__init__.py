"""The built-in tiny video model and its synthetic domain.

``domain``      procedural clips and captions (the training data and the evaluation prompts)
``checker``     reads a clip and its caption, reports which attributes are right
``autoencoder`` per-frame 32×32 RGB ↔ 16×16×4 latent
``text``        tokenizer and text encoder over the domain vocabulary
``model``       TinyVideoModel: the three parts + a Wan transformer; load / save / generate
``train``       the training script behind ``hsa-video train-tiny``

Nothing here is imported by ``import hsa_core``.
"""
