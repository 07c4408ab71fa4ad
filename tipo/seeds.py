"""Every seed rule of tipo, in one place.

Seeds are whole numbers in ``[0, 2**32)`` (:data:`tipo.options.SEED_MAX`: the range of A1111's
seeds and of torch's CPU generator as A1111 uses it). The rules:

1. **Fresh seeds** come from the OS (:func:`fresh_seed`); global random state is never read or
   written. Whoever draws one reports it (``Expansion.seed``, a batch record's ``base_seed``, an
   image record's ``seed``) so the run can be repeated.
2. **Records of a batch** (``tipo expand --batch``): record ``i`` under base seed ``B`` uses
   :func:`record_seed` ``(B, i)``, the first 4 bytes of ``sha256("tipo-batch:B:i")``, unless the
   record names its own seed. Any record can be rerun alone.
3. **Items of an evaluation** (``python -m eval``): item ``id`` uses :func:`derive` ``(B, id,
   "tipo-eval")`` for every method (its image ``derive(B, id, "tipo-eval-image")``), so methods
   are compared on equal seeds.
4. **Images** (``tipo generate``, A1111's rule): image ``k`` of a run with base seed ``S`` uses
   :func:`image_seed` ``(S, k) = (S + k) mod 2**32``.
5. **Expansions drawn into images**: the prompt whose first image is image ``k`` is expanded with
   :func:`image_seed` ``(E, k)``, where ``E`` is the expansion seed (``tipo generate
   --expand-seed``), by default the base seed ``S``. So ``tipo generate --seed S`` expands its
   prompt with ``S``, exactly as ``tipo expand --seed S`` does.
6. **The WebUI extension**: image ``j`` of a job is expanded with :func:`offset_seed` ``(its image
   seed, TIPO seed)``: the image seed, plus the TIPO seed unless that is -1; "reuse seed"
   reproduces the expansion. The ``seed`` in infotext's ``TIPO Parameters`` has this meaning for
   every writer (:func:`infotext_seed`), so a PNG of ``tipo generate`` pasted into the WebUI
   expands with the same seed.
7. **Host seeds wider than 32 bits** (ComfyUI's 64-bit seed widget) are folded with :func:`fold`.

Example:
    >>> image_seed(1, 0), image_seed(2**32 - 1, 1), fold(2**32 + 5), offset_seed(10, -1), offset_seed(10, 5)
    (1, 0, 5, 10, 15)
"""

from __future__ import annotations

import hashlib
import secrets

from .options import SEED_MAX

__all__ = ["SEED_RANGE", "derive", "fold", "fresh_seed", "image_seed", "infotext_seed", "offset_seed",
           "record_seed"]

SEED_RANGE = SEED_MAX + 1


def fresh_seed() -> int:
    """A new seed from the OS (no global random state is touched)."""
    return secrets.randbelow(SEED_RANGE)


def fold(seed: int) -> int:
    """A host's wider seed folded into tipo's range (``seed mod 2**32``)."""
    return int(seed) % SEED_RANGE


def derive(base: int, key: object, purpose: str) -> int:
    """A seed derived from a base seed and a key (stable across versions and machines).

    Example:
        >>> derive(1, 0, "tipo-batch") == record_seed(1, 0) != record_seed(1, 1)
        True
    """
    digest = hashlib.sha256(f"{purpose}:{base}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def record_seed(base: int, index: int) -> int:
    """The seed of record ``index`` of a batch under base seed ``base`` (rule 2)."""
    return derive(base, index, "tipo-batch")


def image_seed(base: int, k: int) -> int:
    """The seed of image ``k`` of a run with base seed ``base`` (rules 4 and 5: A1111's base + k)."""
    return (int(base) + int(k)) % SEED_RANGE


def offset_seed(seed: int, offset: int | None) -> int:
    """``seed`` plus ``offset`` unless the offset is None or negative (rule 6), in range."""
    return (int(seed) + (int(offset) if offset is not None and offset >= 0 else 0)) % SEED_RANGE


def infotext_seed(expansion_seed: int | None, image_seed: int) -> int:
    """The TIPO seed to write in an image's infotext: the offset that :func:`offset_seed` turns this
    image's seed back into ``expansion_seed`` (-1 when they are equal or the expansion seed is unknown).

    Example:
        >>> infotext_seed(7, 7), infotext_seed(9, 7), offset_seed(7, infotext_seed(9, 7))
        (-1, 2, 9)
    """
    if expansion_seed is None:
        return -1
    offset = (int(expansion_seed) - int(image_seed)) % SEED_RANGE
    return -1 if offset == 0 else offset
