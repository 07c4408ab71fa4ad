"""A1111 sampler names <-> diffusers schedulers: one table, read both ways (pure but for diffusers at use).

A1111 (and the TIPO WebUI extension) writes ``Sampler: Euler a`` or ``Sampler: DPM++ 2M Karras``
in a PNG's parameters; diffusers has scheduler classes with options. :data:`SAMPLERS` maps each
A1111 name to a class and the options that make it that sampler, so

* :func:`sampler_name` gives the A1111 name of a pipeline's scheduler (written into infotext),
* :func:`scheduler_for` builds the scheduler for an A1111 name (``--sampler``, ``regenerate``),
  from the pipeline's own scheduler config (its betas, timestep spacing, prediction type).

A1111 1.9+ also writes the schedule separately (``Sampler: DPM++ 2M, Schedule type: Karras``);
:func:`canonical_name` folds that back into one name. Class names that tipo wrote before this
table existed (``Sampler: DDIMScheduler``) still read. A sampler name is the same algorithm in
both programs, not the same pixels: A1111's k-diffusion samplers and diffusers' schedulers differ
in details (sigma schedule, noise), so an A1111 PNG regenerates with its sampler, seed and settings,
not bit for bit.

Example:
    >>> canonical_name("dpm++ 2m", "Karras")
    'DPM++ 2M Karras'
    >>> SAMPLERS["Euler a"].cls
    'EulerAncestralDiscreteScheduler'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import RequestError

__all__ = ["SAMPLERS", "Sampler", "canonical_name", "sampler_name", "scheduler_for"]


@dataclass(frozen=True)
class Sampler:
    """One A1111 sampler: the diffusers class and the config values that make it this sampler."""

    name: str
    cls: str
    options: dict[str, Any] = field(default_factory=dict)
    needs: str | None = None  # an extra package the scheduler imports

    def matches(self, cls_name: str, config: Any) -> bool:
        if cls_name != self.cls:
            return False
        get = config.get if hasattr(config, "get") else (lambda k, d=None: getattr(config, k, d))
        return all(get(k, _DEFAULTS.get(k)) == v for k, v in self.options.items())


# The flags the table switches: each is set explicitly when a scheduler is built, so a pipeline
# whose scheduler had Karras sigmas on gets them off for a plain name.
_DEFAULTS: dict[str, Any] = {"use_karras_sigmas": False, "algorithm_type": "dpmsolver++", "skip_prk_steps": False}
_KARRAS = {"use_karras_sigmas": True}


def _table() -> dict[str, Sampler]:
    rows = [
        Sampler("Euler a", "EulerAncestralDiscreteScheduler"),
        Sampler("Euler", "EulerDiscreteScheduler", {"use_karras_sigmas": False}),
        Sampler("Euler Karras", "EulerDiscreteScheduler", _KARRAS),
        Sampler("LMS", "LMSDiscreteScheduler", {"use_karras_sigmas": False}),
        Sampler("LMS Karras", "LMSDiscreteScheduler", _KARRAS),
        Sampler("Heun", "HeunDiscreteScheduler", {"use_karras_sigmas": False}),
        Sampler("Heun Karras", "HeunDiscreteScheduler", _KARRAS),
        Sampler("DPM2", "KDPM2DiscreteScheduler", {"use_karras_sigmas": False}),
        Sampler("DPM2 Karras", "KDPM2DiscreteScheduler", _KARRAS),
        Sampler("DPM2 a", "KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": False}),
        Sampler("DPM2 a Karras", "KDPM2AncestralDiscreteScheduler", _KARRAS),
        Sampler("DPM++ 2M", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": False}),
        Sampler("DPM++ 2M Karras", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", **_KARRAS}),
        Sampler("DPM++ 2M SDE", "DPMSolverMultistepScheduler",
                {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": False}),
        Sampler("DPM++ 2M SDE Karras", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", **_KARRAS}),
        Sampler("DPM++ SDE", "DPMSolverSDEScheduler", {"use_karras_sigmas": False}, needs="torchsde"),
        Sampler("DPM++ SDE Karras", "DPMSolverSDEScheduler", _KARRAS, needs="torchsde"),
        Sampler("DPM++ 2S a", "DPMSolverSinglestepScheduler", {"use_karras_sigmas": False}),
        Sampler("DPM++ 2S a Karras", "DPMSolverSinglestepScheduler", _KARRAS),
        Sampler("DDIM", "DDIMScheduler"),
        Sampler("PLMS", "PNDMScheduler", {"skip_prk_steps": True}),
        Sampler("UniPC", "UniPCMultistepScheduler", {"use_karras_sigmas": False}),
        Sampler("DEIS", "DEISMultistepScheduler", {"use_karras_sigmas": False}),
        Sampler("LCM", "LCMScheduler"),
        Sampler("DDPM", "DDPMScheduler"),
    ]
    return {s.name: s for s in rows}


#: A1111 name -> :class:`Sampler`, in A1111's order where A1111 has the sampler.
SAMPLERS: dict[str, Sampler] = _table()
#: Other spellings people type or other programs write.
_ALIASES = {"pndm": "PLMS", "euler_a": "Euler a", "euler_ancestral": "Euler a", "euler ancestral": "Euler a",
            "k_euler_a": "Euler a", "k_euler": "Euler", "k_lms": "LMS", "k_heun": "Heun", "k_dpm_2": "DPM2",
            "k_dpm_2_a": "DPM2 a", "dpmpp_2m": "DPM++ 2M", "dpmpp_2m_sde": "DPM++ 2M SDE", "dpmpp_sde": "DPM++ SDE",
            "dpmpp_2s_a": "DPM++ 2S a", "ddim": "DDIM", "uni_pc": "UniPC", "unipc": "UniPC", "lcm": "LCM"}
_BY_LOWER = {name.lower(): name for name in SAMPLERS}
_BY_CLASS = {s.cls: s for s in reversed(list(SAMPLERS.values()))}  # the first row of a class wins


def canonical_name(name: str, schedule: str | None = None) -> str:
    """The table's spelling of an A1111 sampler name (case and aliases folded).

    ``schedule`` is A1111 1.9+'s separate ``Schedule type`` (``Karras``, ``Automatic``, ...):
    ``Karras`` joins the name; others are the sampler's own schedule. A diffusers class name
    (what tipo wrote before) gives that class's plain sampler. Unknown names raise a
    :class:`~tipo.errors.RequestError` that lists the known ones.
    """
    text = " ".join(str(name).split())
    if text in _BY_CLASS:
        text = _BY_CLASS[text].name
    key = text.lower()
    key = _BY_LOWER.get(key) or _ALIASES.get(key) or _ALIASES.get(key.replace(" ", "_")) or ""
    if not key:
        raise RequestError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
    if schedule and schedule.strip().lower() == "karras" and not key.endswith("Karras"):
        karras = f"{key} Karras"
        if karras not in SAMPLERS:
            raise RequestError(f"sampler {key!r} has no Karras schedule in diffusers")
        key = karras
    return key


def sampler_name(scheduler: Any) -> str:
    """The A1111 name of a diffusers scheduler object, or its class name when no row matches."""
    cls_name = type(scheduler).__name__
    config = getattr(scheduler, "config", {})
    for sampler in SAMPLERS.values():
        if sampler.matches(cls_name, config):
            return sampler.name
    return cls_name


def scheduler_for(name: str, current: Any, schedule: str | None = None) -> Any:
    """A scheduler for the A1111 sampler ``name``, built from ``current``'s config.

    Returns ``current`` itself when it already is that sampler.
    """
    sampler = SAMPLERS[canonical_name(name, schedule)]
    if sampler.matches(type(current).__name__, getattr(current, "config", {})):
        return current
    if sampler.needs is not None:
        import importlib.util

        if importlib.util.find_spec(sampler.needs) is None:
            raise RequestError(f"the {sampler.name} sampler needs the Python package {sampler.needs!r}, which is not "
                               f"installed: pip install {sampler.needs}")
    import diffusers

    cls = getattr(diffusers, sampler.cls, None)
    if cls is None:
        raise RequestError(f"this diffusers ({diffusers.__version__}) has no {sampler.cls} for sampler {sampler.name!r}")
    options = {k: v for k, v in {**_DEFAULTS, **sampler.options}.items() if k in _accepted(cls)}
    return cls.from_config(current.config, **options)


def _accepted(cls: Any) -> set[str]:
    import inspect

    return set(inspect.signature(cls.__init__).parameters)
