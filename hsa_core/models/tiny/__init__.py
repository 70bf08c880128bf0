"""The built-in tiny video model, trained on a synthetic world of moving shapes: the server's default
model and the test fixture.

``vocabulary``  the words of its captions and its clips' size
``autoencoder`` per-frame 32×32 RGB ↔ 16×16×4 latent
``text``        tokenizer and text encoder over the vocabulary
``model``       TinyVideoModel: the three parts + a Wan transformer; load / save / generate
``weights/``    the trained weights, its model card and training log

Its synthetic domain, checker, evaluation and training are the application's (``hsa_video/tiny``).
Nothing here is imported by ``import hsa_core``.
"""
