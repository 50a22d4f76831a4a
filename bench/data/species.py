"""Fine-grained "species" of the embedded generator: what tells the classes apart (no rendering here).

CUB-200-2011's species share most of their appearance and differ in a few part
attributes, some of them small (a cap, an eye stripe, wing bars, the breast's
colour). The species of :mod:`bench.data.generator` are built the same way.
Each is a combination of four part attributes:

====================  ==========================================================  ======
attribute             values                                                      count
====================  ==========================================================  ======
head colour (hue)     red, yellow, green, cyan, blue, magenta (60 degrees apart)  6
head pattern          plain, capped (dark crown), eye-striped (dark band)         3
breast colour         white, buff, rufous, slate                                  4
wing pattern          plain, barred, spotted, streaked                            4
====================  ==========================================================  ======

so 6 x 3 x 4 x 4 = 288 possible species (:data:`MAX_SPECIES`). The ``C``
species of a dataset are the first ``C`` of one fixed shuffled order of the
288 combinations (:func:`species_designs`), whatever the dataset's seed: the
48 species of ``cub48`` are the first 48 of ``cub``'s 200, as a dataset's seed
changes the birds, not the species. Two species may differ in a single
attribute, so the confusions of real fine-grained data (a capped and an
eye-striped bird otherwise alike) are built in. Everything else is shared and
drawn per image: the body's and the tail's texture and colours, the wing's
colours (only its pattern is the species'), the pose, the size, the
background and the distractors.

Within a species, colours vary per image, as plumage and light do: the head's
and the breast's hue are shifted by a normal draw of standard deviation
``hue_jitter`` degrees (``dataset.hue_jitter``), their saturation and value
scaled by up to +-15 %, and every class colour of the bird multiplied by one
illumination gain in [0.8, 1.15].
"""

from __future__ import annotations

import colorsys
import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Bump whenever a species' rendering could change: it is part of every species dataset's folder name.
SPECIES_VERSION = 1

# name -> hue in [0, 1)
HEAD_HUES = (("red", 0 / 6), ("yellow", 1 / 6), ("green", 2 / 6), ("cyan", 3 / 6), ("blue", 4 / 6),
             ("magenta", 5 / 6))
HEAD_PATTERNS = ("plain", "capped", "eye-striped")
# name -> (hue, saturation, value)
BREAST_COLOURS = (("white", (0.12, 0.06, 0.95)), ("buff", (0.11, 0.45, 0.88)), ("rufous", (0.04, 0.80, 0.72)),
                  ("slate", (0.60, 0.25, 0.55)))
# name -> texture of bench.data.generator.TEXTURES (the wing's colours are random per image)
WING_PATTERNS = (("plain", "plain"), ("barred", "stripes"), ("spotted", "dots"), ("streaked", "bands"))
MAX_SPECIES = len(HEAD_HUES) * len(HEAD_PATTERNS) * len(BREAST_COLOURS) * len(WING_PATTERNS)
SPECIES_ORDER_SEED = 2011  # the fixed shuffle of the combinations (CUB-200-2011's year); not a dataset seed

HEAD_SATURATION, HEAD_VALUE = 0.9, 0.95
COLOUR_SCALE_RANGE = (0.85, 1.15)  # per-image factor on a class colour's saturation and on its value
ILLUMINATION_RANGE = (0.8, 1.15)  # per-image gain on every class colour of the bird
HEAD_PATTERN_DARKNESS = 0.2  # a cap or eye stripe is the head colour at this brightness


@dataclass(frozen=True)
class SpeciesDesign:
    """One species: its label, name and four part attributes (indices into the tables above)."""

    label: int
    name: str
    head_hue: int
    head_pattern: int
    breast: int
    wing: int

    @property
    def wing_texture(self) -> str:
        return WING_PATTERNS[self.wing][1]

    @property
    def head_pattern_name(self) -> str:
        return HEAD_PATTERNS[self.head_pattern]


def _species_name(label: int, head_hue: int, head_pattern: int, breast: int, wing: int) -> str:
    pattern = {"plain": "", "capped": "-capped", "eye-striped": "-eyestriped"}[HEAD_PATTERNS[head_pattern]]
    return (f"s{label:03d}_{HEAD_HUES[head_hue][0]}{pattern}-head_{BREAST_COLOURS[breast][0]}-breast_"
            f"{WING_PATTERNS[wing][0]}-wing")


@lru_cache(maxsize=None)
def species_designs(num_species: int) -> tuple[SpeciesDesign, ...]:
    """The ``num_species`` species of a dataset: the first of one fixed shuffle of every attribute combination."""
    if isinstance(num_species, bool) or not isinstance(num_species, int) or not 2 <= num_species <= MAX_SPECIES:
        raise ValueError(f"num_species={num_species!r} is not valid: expected an integer in [2, {MAX_SPECIES}]")
    combinations = list(itertools.product(range(len(HEAD_HUES)), range(len(HEAD_PATTERNS)),
                                          range(len(BREAST_COLOURS)), range(len(WING_PATTERNS))))
    order = np.random.default_rng(SPECIES_ORDER_SEED).permutation(len(combinations))
    return tuple(SpeciesDesign(label, _species_name(label, *combinations[index]), *combinations[index])
                 for label, index in enumerate(order[:num_species].tolist()))


def attribute_differences(a: SpeciesDesign, b: SpeciesDesign) -> int:
    """How many of the four part attributes two species differ in (1 = the closest possible pair)."""
    return sum(getattr(a, name) != getattr(b, name) for name in ("head_hue", "head_pattern", "breast", "wing"))


def _jittered_rgb(rng: np.random.Generator, hsv: tuple[float, float, float], hue_jitter: float,
                  illumination: float) -> tuple[float, float, float]:
    """A class colour as one image shows it: RGB in [0, 255] after the per-image jitter (module docstring)."""
    hue = (hsv[0] + rng.normal(0.0, hue_jitter) / 360.0) % 1.0
    saturation = min(hsv[1] * rng.uniform(*COLOUR_SCALE_RANGE), 1.0)
    value = min(hsv[2] * rng.uniform(*COLOUR_SCALE_RANGE) * illumination, 1.0)
    return tuple(255.0 * c for c in colorsys.hsv_to_rgb(hue, saturation, value))


def species_colours(rng: np.random.Generator, design: SpeciesDesign,
                    hue_jitter: float) -> dict[str, tuple[float, float, float]]:
    """The species' colours in one image: ``{"head", "head_pattern", "breast"}``, RGB in [0, 255]."""
    illumination = rng.uniform(*ILLUMINATION_RANGE)
    head = _jittered_rgb(rng, (HEAD_HUES[design.head_hue][1], HEAD_SATURATION, HEAD_VALUE), hue_jitter,
                         illumination)
    breast = _jittered_rgb(rng, BREAST_COLOURS[design.breast][1], hue_jitter, illumination)
    return {"head": head, "head_pattern": tuple(HEAD_PATTERN_DARKNESS * c for c in head), "breast": breast}
