"""The synthetic video domain of the built-in tiny model: procedural, unlimited, seeded.

A clip is F frames of S×S RGB pixels: a static background (solid, gradient, stripes or checker,
in one named colour and a darker shade of it) and one or two objects (circle, square, triangle, in
other named colours) moving left, right, up or down at a constant speed — bouncing off the walls — or
staying still. The caption names every attribute:

    "a red circle moving left on a blue striped background"
    "a yellow square staying still and a cyan triangle moving up on a plain white background"

Static backgrounds next to moving objects are exactly where HSA should save work.

Some attribute combinations never appear in training (``HELD_OUT_OBJECTS``, ``HELD_OUT_BACKGROUNDS``)
so that evaluation can test generalisation to unseen compositions of seen words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from hsa_core.models.tiny.vocabulary import (  # noqa: F401  (the domain's words: re-exported for its users)
    BACKGROUND_WORDS,
    BACKGROUNDS,
    COLOR_NAMES,
    DIRECTION_WORDS,
    DIRECTIONS,
    FRAMES,
    SHAPES,
    SIZE,
)

COLORS: dict[str, tuple[int, int, int]] = dict(zip(COLOR_NAMES, [
    (220, 40, 40), (40, 180, 60), (40, 80, 220), (235, 215, 40),
    (150, 60, 190), (240, 140, 30), (40, 200, 210), (240, 240, 240),
]))
SHADE = 0.55  # patterns alternate a colour with this fraction of it

UNIT_VELOCITY = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}

HELD_OUT_OBJECTS = frozenset({("green", "triangle"), ("yellow", "circle"), ("purple", "square")})
HELD_OUT_BACKGROUNDS = frozenset({("checker", "red"), ("stripes", "cyan")})

MIN_SIZE, MAX_SIZE = 8, 12  # object diameter / side in pixels
MIN_SPEED, MAX_SPEED = 1.0, 2.0  # pixels per frame
FRAMES_BEFORE_BOUNCE = 8  # the first bounce comes no earlier, so the initial direction is visible


@dataclass(frozen=True)
class ObjectSpec:
    shape: str
    color: str
    direction: str
    size: int = 10
    speed: float = 1.5
    start: tuple[float, float] = (16.0, 16.0)  # centre (x, y) at frame 0

    def phrase(self) -> str:
        article = "an" if self.color[0] in "aeiou" else "a"
        return f"{article} {self.color} {self.shape} {DIRECTION_WORDS[self.direction]}"


@dataclass(frozen=True)
class ClipSpec:
    background: str
    background_color: str
    objects: tuple[ObjectSpec, ...]
    orientation: str = "horizontal"  # of stripes and gradients
    period: int = 8  # stripe / checker cell size in pixels
    frames: int = FRAMES
    size: int = SIZE

    @property
    def caption(self) -> str:
        things = " and ".join(o.phrase() for o in self.objects)
        return f"{things} on a {BACKGROUND_WORDS[self.background]} {self.background_color} background"

    @property
    def held_out(self) -> bool:
        return (self.background, self.background_color) in HELD_OUT_BACKGROUNDS or any(
            (o.color, o.shape) in HELD_OUT_OBJECTS for o in self.objects
        )


def sample_spec(rng: np.random.Generator, split: str = "train", max_objects: int = 2,
                two_object_probability: float = 0.3) -> ClipSpec:
    """A random clip description. ``split``: "train" (no held-out combination), "held_out" (at least
    one), or "any"."""
    if split not in ("train", "held_out", "any"):
        raise ValueError(f"split must be 'train', 'held_out' or 'any', got {split!r}")
    while True:
        spec = _draw(rng, max_objects, two_object_probability)
        if (split == "any" or spec.held_out == (split == "held_out")) and not _hides_an_object(spec):
            return spec


MAX_HIDDEN = 0.5  # no object may be more than half covered in any frame: the caption must stay true


def _hides_an_object(spec: ClipSpec) -> bool:
    if len(spec.objects) < 2:
        return False
    tracks = [trajectory(o, spec.frames, spec.size) for o in spec.objects]
    for f in range(spec.frames):
        masks = [shape_mask(o.shape, *t[f], o.size, spec.size) for o, t in zip(spec.objects, tracks)]
        for i, mask in enumerate(masks):
            covering = np.logical_or.reduce(masks[i + 1 :]) if i + 1 < len(masks) else np.zeros_like(mask)
            if (mask & covering).sum() > MAX_HIDDEN * mask.sum():
                return True
    return False


def _draw(rng: np.random.Generator, max_objects: int, two_object_probability: float) -> ClipSpec:
    names = list(COLORS)
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    background_color = names[rng.integers(len(names))]
    count = 2 if max_objects >= 2 and rng.random() < two_object_probability else 1
    object_colors = rng.choice([c for c in names if c != background_color], size=count, replace=False)
    objects = []
    for color in object_colors:
        shape = SHAPES[rng.integers(len(SHAPES))]
        direction = DIRECTIONS[rng.integers(len(DIRECTIONS))]
        size = int(rng.integers(MIN_SIZE, MAX_SIZE + 1))
        speed = float(rng.uniform(MIN_SPEED, MAX_SPEED))
        start = _start(rng, direction, size, speed, SIZE)
        objects.append(ObjectSpec(shape, str(color), direction, size, speed, start))
    return ClipSpec(
        background=background,
        background_color=background_color,
        objects=tuple(objects),
        orientation="horizontal" if rng.random() < 0.5 else "vertical",
        period=int(rng.choice([6, 8])),
    )


def _start(rng: np.random.Generator, direction: str, size: int, speed: float, frame_size: int) -> tuple[float, float]:
    """A start centre with room for FRAMES_BEFORE_BOUNCE frames of travel before the first wall."""
    low, high = size / 2, frame_size - size / 2
    travel = min(FRAMES_BEFORE_BOUNCE * speed, high - low)
    dx, dy = UNIT_VELOCITY[direction]
    coordinates = []
    for d in (dx, dy):
        if d < 0:
            coordinates.append(float(rng.uniform(low + travel, high)))
        elif d > 0:
            coordinates.append(float(rng.uniform(low, high - travel)))
        else:
            coordinates.append(float(rng.uniform(low, high)))
    return coordinates[0], coordinates[1]


def trajectory(obj: ObjectSpec, frames: int = FRAMES, size: int = SIZE) -> np.ndarray:
    """(frames, 2) object centres, reflecting off the walls."""
    low, high = obj.size / 2, size - obj.size / 2
    dx, dy = UNIT_VELOCITY[obj.direction]
    t = np.arange(frames, dtype=np.float64)
    centres = []
    for start, d in zip(obj.start, (dx, dy)):
        centres.append(_bounce(start + d * obj.speed * t, low, high))
    return np.stack(centres, axis=1)


def _bounce(position: np.ndarray, low: float, high: float) -> np.ndarray:
    span = high - low
    if span <= 0:
        return np.full_like(position, low)
    folded = np.mod(position - low, 2 * span)
    return low + np.where(folded > span, 2 * span - folded, folded)


def shape_mask(shape: str, cx: float, cy: float, size: int, grid: int = SIZE) -> np.ndarray:
    """(grid, grid) bool mask of a shape centred at (cx, cy), sampled at pixel centres."""
    y, x = np.mgrid[0:grid, 0:grid].astype(np.float32) + 0.5
    r = size / 2
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    if shape == "square":
        return (np.abs(x - cx) <= r) & (np.abs(y - cy) <= r)
    if shape == "triangle":  # apex up, base at the bottom, as wide as it is tall
        top = cy - r
        return (y >= top) & (y <= cy + r) & (np.abs(x - cx) <= (y - top) / 2)
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


def render_background(spec: ClipSpec) -> np.ndarray:
    """(S, S, 3) float32 in [0, 1]."""
    light = np.asarray(COLORS[spec.background_color], dtype=np.float32)
    dark = light * SHADE
    y, x = np.mgrid[0 : spec.size, 0 : spec.size]
    along = y if spec.orientation == "horizontal" else x
    if spec.background == "solid":
        weight = np.ones((spec.size, spec.size), dtype=np.float32)
    elif spec.background == "gradient":
        weight = 1 - along.astype(np.float32) / (spec.size - 1)
    elif spec.background == "stripes":
        weight = ((along // (spec.period // 2)) % 2 == 0).astype(np.float32)
    elif spec.background == "checker":
        cell = spec.period // 2
        weight = (((x // cell) + (y // cell)) % 2 == 0).astype(np.float32)
    else:
        raise ValueError(f"unknown background {spec.background!r}; known: {', '.join(BACKGROUNDS)}")
    image = dark + weight[..., None] * (light - dark)
    return image / 255.0


def object_masks(spec: ClipSpec) -> np.ndarray:
    """(F, S, S) bool: the pixels any object covers in each frame."""
    masks = np.zeros((spec.frames, spec.size, spec.size), dtype=bool)
    for obj in spec.objects:
        for f, (cx, cy) in enumerate(trajectory(obj, spec.frames, spec.size)):
            masks[f] |= shape_mask(obj.shape, cx, cy, obj.size, spec.size)
    return masks


def render(spec: ClipSpec) -> np.ndarray:
    """(F, S, S, 3) float32 RGB in [0, 1]."""
    background = render_background(spec)
    clip = np.repeat(background[None], spec.frames, axis=0)
    for obj in spec.objects:
        color = np.asarray(COLORS[obj.color], dtype=np.float32) / 255.0
        for f, (cx, cy) in enumerate(trajectory(obj, spec.frames, spec.size)):
            clip[f][shape_mask(obj.shape, cx, cy, obj.size, spec.size)] = color
    return clip


_OBJECT_PATTERN = re.compile(
    r"an? (?P<color>\w+) (?P<shape>\w+) (?:moving (?P<direction>left|right|up|down)|staying still)"
)
_BACKGROUND_PATTERN = re.compile(r"on an? (?P<kind>\w+) (?P<color>\w+) background")


def parse_caption(caption: str) -> dict | None:
    """The attributes a caption of this domain names, or None if it is not one.

    Returns {"objects": [{"color", "shape", "direction"}, …], "background": kind, "background_color"}.
    """
    text = caption.lower().strip()
    background = _BACKGROUND_PATTERN.search(text)
    objects = [
        {"color": m["color"], "shape": m["shape"], "direction": m["direction"] or "still"}
        for m in _OBJECT_PATTERN.finditer(text)
    ]
    kinds = {word: kind for kind, word in BACKGROUND_WORDS.items()}
    if background is None or not objects or background["kind"] not in kinds:
        return None
    if any(o["color"] not in COLORS or o["shape"] not in SHAPES for o in objects):
        return None
    if background["color"] not in COLORS:
        return None
    return {"objects": objects, "background": kinds[background["kind"]], "background_color": background["color"]}
