"""Automatic quality check of a clip against its caption, from the pixels alone.

The checker judges videos a diffusion model generated from a caption of the tiny domain
(``domain.py``), so it may use only what such a video offers: the pixels and the caption, never the
``ClipSpec`` that would have rendered the ground truth. Everything it knows about the domain is the
palette (``COLORS``), the shade factor of backgrounds (``SHADE``), the shape and background
vocabulary, and the promise that the first bounce off a wall comes no earlier than frame
``FRAMES_BEFORE_BOUNCE``. It works in the unit RGB cube, by colour distance, because the domain's
attributes are all tied to colours: a background is one palette colour and its shade, each object
is one other palette colour.

Background colour. A background pixel lies on the segment from ``colour * SHADE`` to ``colour``
(solid and pattern pixels at its two ends, gradient pixels along it). On the per-pixel temporal
median, which removes moving objects and most noise, the palette colour whose segment passes close
to the most pixels is the background colour.

Background kind. Each background pixel of the median projects onto that segment at a weight in
[0, 1] (shade → light). Pixels far from the segment (still objects) are left out. A solid
background has a flat weight; otherwise either the row means or the column means of the weight
explain it (stripes and gradients vary along one axis only) or neither does (a checkerboard is an
XOR of both axes, so both its row and column means are flat). Along the explaining axis a gradient
is a straight ramp and stripes a square wave, told apart by how well a line fits the profile.

Objects. Each pixel of each frame is labelled with the nearest of the non-background palette
colours or the background segment; the pixels of a captioned object's colour, reduced to their
largest 4-connected component (so scattered noise pixels do not count), are its mask in that
frame. The colour is right when the mask has at least MIN_OBJECT_PIXELS in at least half the frames.

Shape is the best fit of the domain's own shape templates (``shape_mask`` over sizes and
half-pixel centres) to the masks of a few frames where the object looks whole, scored by IoU.
Template fitting rather than summary features (fill ratio, apex) because the domain lets objects
overlap: pixels of other objects count as "maybe behind", so a square with a corner covered still
fits a square best. Direction is the Theil–Sen slope of the mask centroid over the frames before
the first possible bounce, preferring frames where no other object touches this one, since a
passing object drags the centroid of what stays visible. Below STILL_MAX_SPEED on both axes the
object is still; otherwise the dominant axis and its sign (image y grows downwards) name it.

Temporal consistency. The mean absolute frame-to-frame change over pixels that are background in
both frames: pixels labelled as any object colour, and their one-pixel rim (where a blurry object
blends into the background), are left out. Ground truth scores 0 up to float rounding.

Limits. The domain keeps every object at least half visible in every frame, but a half-covered
object can still fool the shape or direction estimate now and then, so ground truth scores a little
under 1 on some seeds. Two captioned objects of the same colour (the domain never draws them) would
both find the larger one.
After a 3×3 blur, 8-pixel squares lose their corner pixels and look like 9-pixel circles on the
pixel grid, so blurrier generators lose shape accuracy on the smallest squares first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .domain import COLORS, FRAMES_BEFORE_BOUNCE, SHADE, SHAPES, parse_caption, shape_mask

PALETTE_NAMES = tuple(COLORS)
PALETTE = np.asarray([COLORS[name] for name in PALETTE_NAMES], dtype=np.float32) / 255.0

# Colour distances are Euclidean in the unit RGB cube. The closest palette pair (orange, yellow)
# is 0.30 apart and orange is 0.23 from the yellow background segment, so nearest-colour labels
# stay right under moderate noise; the tolerances only reject pixels that are no palette colour.
BACKGROUND_TOLERANCE = 0.12  # median pixel to its segment; the median has ~1/4 of per-frame noise
MIN_BACKGROUND_FRACTION = 0.25  # of the frame; objects cover at most ~30% of it
OBJECT_TOLERANCE = 0.25  # a pixel to an object colour: ~5σ of per-channel noise of 0.05
MIN_OBJECT_PIXELS = 8  # the smallest object (an 8-pixel triangle) covers 32+ pixels
UNOCCLUDED_AREA_FRACTION = 0.8  # frames whose mask is this close to the largest judge the shape

SOLID_MAX_WEIGHT_STD = 0.12  # gradients have std ≈ 0.29, stripes and checkers ≈ 0.5
CHECKER_MIN_RESIDUAL_FRACTION = 0.5  # neither axis explains half the variance of the weight
GRADIENT_MIN_LINEAR_FIT = 0.6  # a ramp fits a line with R² ≈ 1, a square wave with R² < 0.1

MAX_HIDDEN_GROWTH = 4  # pixels an object may extend behind whatever hides part of it
HIDDEN_PIXEL_COST = 0.25  # of a mismatched pixel, for a template pixel behind something else
SHAPE_FRAMES = 3  # unoccluded frames whose template fits decide the shape
STILL_MAX_SPEED = 0.3  # pixels per frame; moving objects go at least 1


@dataclass
class CheckResult:
    color: float  # fraction of captioned objects whose colour is found
    shape: float  # fraction of captioned objects whose shape is classified correctly
    direction: float  # fraction of captioned objects whose motion direction is right
    background: float  # 1.0 if the background colour is right else 0.0
    background_kind: float  # 1.0 if the background kind is right else 0.0
    temporal_consistency: float  # mean |frame-to-frame change| of background pixels, lower is better;
    # nan when no pixel is background in two consecutive frames
    first_frame_max_abs_error: float | None = None  # only when a reference first frame is given
    details: dict = field(default_factory=dict)  # what was detected, for debugging


def check_clip(clip: np.ndarray, caption: str, first_frame: np.ndarray | None = None) -> CheckResult:
    """Score ``clip`` ((F, H, W, 3), float in [0, 1] or uint8) against ``caption``.

    ``first_frame`` ((H, W, 3)), when given, is the conditioning frame of image-to-video; the
    result then also reports the largest absolute difference between it and the clip's frame 0.
    """
    wanted = parse_caption(caption)
    if wanted is None:
        raise ValueError(f"not a caption of the tiny domain: {caption!r}")
    frames = _as_unit_float(clip, "clip")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 2:
        raise ValueError(f"clip must have shape (frames >= 2, height, width, 3), got {np.shape(clip)}")

    median = np.median(frames, axis=0)
    background_color = _background_color(median)
    background_kind = _background_kind(median, background_color)
    labels = _label_pixels(frames, background_color)

    found = []
    for wanted_object in wanted["objects"]:
        color_index = PALETTE_NAMES.index(wanted_object["color"])
        masks = _largest_components(labels == color_index)
        # Another object's pixels (and their rim, where colours blend) may hide part of this one.
        hidden = _dilate((labels >= 0) & (labels != color_index)) & ~masks
        found.append(_describe_object(masks, hidden))

    count = len(wanted["objects"])
    background_name = None if background_color is None else PALETTE_NAMES[background_color]
    details = {
        "background_color": background_name,
        "background_kind": background_kind,
        "objects": [dict(wanted=w, **f) for w, f in zip(wanted["objects"], found)],
    }
    result = CheckResult(
        color=sum(f["found"] for f in found) / count,
        shape=sum(f["shape"] == w["shape"] for w, f in zip(wanted["objects"], found)) / count,
        direction=sum(f["direction"] == w["direction"] for w, f in zip(wanted["objects"], found)) / count,
        background=float(background_name == wanted["background_color"]),
        background_kind=float(background_kind == wanted["background"]),
        temporal_consistency=_background_change(frames, labels >= 0),
        details=details,
    )
    if first_frame is not None:
        reference = _as_unit_float(first_frame, "first_frame")
        if reference.shape != frames.shape[1:]:
            raise ValueError(f"first_frame must have shape {frames.shape[1:]}, got {reference.shape}")
        result.first_frame_max_abs_error = float(np.abs(frames[0] - reference).max())
    return result


def _as_unit_float(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name} must be float in [0, 1] or uint8, got dtype {array.dtype}")
    # A generator may overshoot [0, 1] slightly; the palette lives inside it.
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def _segment_projection(pixels: np.ndarray, color_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(weight in [0, 1] from shade to light, distance) of pixels to a colour's background segment."""
    light = PALETTE[color_index]
    dark = light * SHADE
    axis = light - dark
    weight = np.clip((pixels - dark) @ axis / (axis @ axis), 0.0, 1.0)
    distance = np.linalg.norm(pixels - (dark + weight[..., None] * axis), axis=-1)
    return weight, distance


def _background_color(median: np.ndarray) -> int | None:
    """The palette colour whose background segment explains the most pixels; None if none explains
    MIN_BACKGROUND_FRACTION of them (the clip has no background of this domain)."""
    explained = [
        (_segment_projection(median, index)[1] < BACKGROUND_TOLERANCE).mean() for index in range(len(PALETTE))
    ]
    best = int(np.argmax(explained))
    return best if explained[best] >= MIN_BACKGROUND_FRACTION else None


def _background_kind(median: np.ndarray, color_index: int | None) -> str | None:
    if color_index is None:
        return None
    weight, distance = _segment_projection(median, color_index)
    valid = distance < BACKGROUND_TOLERANCE
    if valid.sum() < 2 or weight[valid].std() < SOLID_MAX_WEIGHT_STD:
        return "solid"
    total_variance = weight[valid].var()
    residual_by_axis = []
    profile_by_axis = []
    for axis in (1, 0):  # row means (pattern along y), then column means (pattern along x)
        counts = valid.sum(axis=axis)
        profile = np.where(valid, weight, 0.0).sum(axis=axis) / np.maximum(counts, 1)
        explained = np.expand_dims(profile, axis)
        residual_by_axis.append(((weight - explained) ** 2)[valid].mean())
        profile_by_axis.append((profile, counts > 0))
    best = int(np.argmin(residual_by_axis))
    if residual_by_axis[best] > CHECKER_MIN_RESIDUAL_FRACTION * total_variance:
        return "checker"
    profile, present = profile_by_axis[best]
    positions = np.nonzero(present)[0].astype(np.float64)
    values = profile[present]
    if len(values) < 3:
        return "stripes"
    correlation = np.corrcoef(positions, values)[0, 1]
    return "gradient" if correlation**2 >= GRADIENT_MIN_LINEAR_FIT else "stripes"


def _label_pixels(frames: np.ndarray, background_color: int | None) -> np.ndarray:
    """(F, H, W) int: index of the nearest non-background palette colour, or -1 for background / none."""
    # Squared distances through one matrix product: |p - c|² = |p|² - 2 p·c + |c|².
    squared = (frames**2).sum(axis=-1)[..., None] - 2 * frames @ PALETTE.T + (PALETTE**2).sum(axis=-1)
    if background_color is not None:  # the background's colour stands for its whole segment
        squared[..., background_color] = _segment_projection(frames, background_color)[1] ** 2
    nearest = squared.argmin(axis=-1)
    close = np.take_along_axis(squared, nearest[..., None], axis=-1)[..., 0] < OBJECT_TOLERANCE**2
    return np.where(close & (nearest != background_color), nearest, -1)


def _largest_components(masks: np.ndarray) -> np.ndarray:
    """Per frame, the largest 4-connected component of a (F, H, W) bool mask."""
    frames, height, width = masks.shape
    # Label propagation: every pixel starts with its own id and takes the largest id among its
    # mask neighbours until nothing changes; ids then name components. Masks are small blobs, so
    # this converges in a few dozen cheap whole-array steps.
    ids = np.arange(frames * height * width).reshape(masks.shape)
    labels = np.where(masks, ids, -1)
    while True:
        spread = labels.copy()
        spread[:, 1:] = np.maximum(spread[:, 1:], labels[:, :-1])
        spread[:, :-1] = np.maximum(spread[:, :-1], labels[:, 1:])
        spread[:, :, 1:] = np.maximum(spread[:, :, 1:], labels[:, :, :-1])
        spread[:, :, :-1] = np.maximum(spread[:, :, :-1], labels[:, :, 1:])
        spread = np.where(masks, spread, -1)
        if np.array_equal(spread, labels):
            break
        labels = spread
    # Ids are numbered frame by frame, so a frame's component sizes are one row of the counts.
    sizes = np.bincount(labels[masks], minlength=ids.size).reshape(frames, height * width)
    largest_ids = sizes.argmax(axis=1) + np.arange(frames) * height * width
    return masks & (labels == largest_ids[:, None, None])


def _describe_object(masks: np.ndarray, hidden: np.ndarray) -> dict:
    """Whether an object's (F, H, W) masks show it, and its shape and direction (None if unknown).

    ``hidden`` (F, H, W) marks pixels where something else may cover the object.
    """
    areas = masks.sum(axis=(1, 2))
    present = areas >= MIN_OBJECT_PIXELS
    description = {"found": bool(present.sum() * 2 >= len(masks)), "frames_seen": int(present.sum())}
    if not present.any():
        return description | {"shape": None, "direction": None, "velocity": None}

    unoccluded = present & (areas >= UNOCCLUDED_AREA_FRACTION * areas.max())
    candidates = np.nonzero(unoccluded)[0]
    chosen = candidates[np.linspace(0, len(candidates) - 1, min(SHAPE_FRAMES, len(candidates))).astype(int)]
    total_fit = dict.fromkeys(SHAPES, 0.0)
    for f in chosen:
        for shape, fit in _shape_fits(masks[f], hidden[f]).items():
            total_fit[shape] += fit / len(chosen)
    description["shape"] = max(total_fit, key=total_fit.get)
    description["shape_fit"] = {name: round(fit, 3) for name, fit in total_fit.items()}

    # Another object passing over this one drags the centroid of what is visible, so the track uses
    # the frames where nothing touches the object when there are enough, else those where it looks
    # whole, else all. Only frames before the first possible bounce show the captioned direction.
    # Theil–Sen (the median slope over all frame pairs) bridges the skipped frames.
    window = FRAMES_BEFORE_BOUNCE + 1
    untouched = present & ~(_dilate(masks) & hidden).any(axis=(1, 2))
    usable = [np.nonzero(frame_set[:window])[0] for frame_set in (untouched, unoccluded, present)]
    tracked = next((indices for indices in usable if len(indices) >= 2), None)
    if tracked is None:
        return description | {"direction": None, "velocity": None}
    centroids = np.array([[xs.mean(), ys.mean()] for ys, xs in (np.nonzero(masks[f]) for f in tracked)])
    first, second = np.triu_indices(len(tracked), k=1)
    slopes = (centroids[second] - centroids[first]) / (tracked[second] - tracked[first])[:, None]
    velocity = np.median(slopes, axis=0)
    rounded = [round(v, 3) for v in velocity.tolist()]
    return description | {"direction": _direction(velocity), "velocity": rounded}


def _shape_fits(mask: np.ndarray, hidden: np.ndarray) -> dict[str, float]:
    """Best IoU of each shape's template with a frame's mask, ignoring pixels that are ``hidden``.

    Templates are the domain's own ``shape_mask`` at integer sizes and half-pixel centres, placed
    to cover the visible mask. Where hidden pixels (another object, or outside the frame) touch the
    mask, part of the object may be behind them, so larger templates are tried too. Hidden pixels
    cannot refute a template, so a square with a corner covered still fits a square; but each one a
    template needs costs a little (HIDDEN_PIXEL_COST), so of two templates that explain the visible
    pixels equally well the one hiding less wins — else a triangle lying on a square would fit a
    square as well as a triangle.
    """
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    extent = max(x1 - x0, y1 - y0) + 1
    growth = MAX_HIDDEN_GROWTH if (_dilate(mask) & hidden).any() else 1
    largest = extent + growth
    # The crop holds every candidate template: left edges reach x1 - largest, right edges
    # x0 + largest + 1 (and likewise in y). Pixels outside the frame count as hidden, so pad the
    # arrays by a whole crop first and the crop never leaves them.
    origin_x, origin_y = x1 - largest, y1 - largest
    side = max(x0 - x1, y0 - y1) + 2 * largest + 1
    padded_mask = np.pad(mask, side)
    padded_hidden = np.pad(hidden, side, constant_values=True)
    crop = np.s_[origin_y + side : origin_y + 2 * side, origin_x + side : origin_x + 2 * side]
    visible, known = padded_mask[crop], ~padded_hidden[crop]

    centres_x, centres_y, sizes = [], [], []
    for size in range(max(extent - 1, 2), largest + 1):
        # A centre that lets a template of this size cover the visible box, give or take a pixel.
        xs_ok = np.arange(x1 - size / 2, x0 + size / 2 + 1.0 + 1e-6, 0.5)
        ys_ok = np.arange(y1 - size / 2, y0 + size / 2 + 1.0 + 1e-6, 0.5)
        grid_x, grid_y = np.meshgrid(xs_ok, ys_ok)
        centres_x.append(grid_x.ravel())
        centres_y.append(grid_y.ravel())
        sizes.append(np.full(grid_x.size, size))
    cx = (np.concatenate(centres_x) - origin_x)[:, None, None]
    cy = (np.concatenate(centres_y) - origin_y)[:, None, None]
    size = np.concatenate(sizes)[:, None, None]

    fits = {}
    for shape in SHAPES:
        templates = shape_mask(shape, cx, cy, size, side)
        overlap = (templates & visible).sum(axis=(1, 2))
        union = ((templates & known) | visible).sum(axis=(1, 2))
        behind = (templates & ~known).sum(axis=(1, 2))
        fits[shape] = float((overlap / (union + HIDDEN_PIXEL_COST * behind)).max())
    return fits


def _dilate(mask: np.ndarray) -> np.ndarray:
    """A (..., H, W) bool mask grown by one pixel in the four directions."""
    grown = mask.copy()
    grown[..., 1:, :] |= mask[..., :-1, :]
    grown[..., :-1, :] |= mask[..., 1:, :]
    grown[..., :, 1:] |= mask[..., :, :-1]
    grown[..., :, :-1] |= mask[..., :, 1:]
    return grown


def _direction(velocity: np.ndarray) -> str:
    dx, dy = velocity
    if max(abs(dx), abs(dy)) < STILL_MAX_SPEED:
        return "still"
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"  # image rows grow downwards


def _background_change(frames: np.ndarray, object_like: np.ndarray) -> float:
    # Blurry objects blend into the background at their rim, so the rim is not background either.
    rim = _dilate(object_like)
    background = ~rim[1:] & ~rim[:-1]
    if not background.any():
        return float("nan")
    change = np.abs(np.diff(frames, axis=0)).mean(axis=-1)
    return float(change[background].mean())
