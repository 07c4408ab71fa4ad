"""The training recipe of tipo's built-in model, as four commands (CPU-sized by default).

    python -m models.train.prepare  --out runs/builtin        # corpus, split, tokenizer, samples
    python -m models.train.train    --run runs/builtin        # a small LLaMA, resumable
    python -m models.train.export   --run runs/builtin        # HF folder + F16 GGUF, checked in tipo
    python -m models.train.evaluate --run runs/builtin        # held-out figures (JSON + text)

Modules, one concept each:

- :mod:`models.train.captions` - Danbooru tags found in captions (phrase matcher over tipo's tag table).
- :mod:`models.train.corpus` - records from the shipped data or from a user's own file, split by group.
- :mod:`models.train.samples` - seeded training samples, built only through ``tipo.planner.build_sample``.
- :mod:`models.train.prepare`, :mod:`~models.train.train`, :mod:`~models.train.export`,
  :mod:`~models.train.evaluate` - the commands; :mod:`~models.train.unpack` turns a GGUF (the shipped
  built-in model) back into an HF folder that ``prepare --tokenizer`` and ``train --init-from`` take.

Every command takes ``--help``. Randomness comes from explicit seeds into local generators.
"""
