"""Evaluation metrics for expanded prompts and the images made from them.

One module per metric; importing this package imports none of them (and so no torch):

- ``features``: the FeatureExtractor contract and input checks shared by the image metrics.
- ``frechet``: Fréchet distance between feature sets; FDD on DINOv2 features.
- ``clip_score``: CLIP image-text cosine and torchmetrics' CLIP score.
- ``aesthetic``: Aesthetic Predictor V2.5 (an MLP head on SigLIP so400m embeddings).
- ``vendi``: Vendi diversity score of feature rows or of a similarity kernel.
- ``text``: tag and prompt metrics that need no model (duplicates, preservation, bans, length, tokens).
"""
