"""The tiny domain's clip checker: right on ground truth, wrong where the caption is wrong."""

from dataclasses import replace

import numpy as np
import pytest

from hsa_video.tiny.checker import check_clip
from hsa_video.tiny.domain import (
    BACKGROUNDS,
    COLORS,
    UNIT_VELOCITY,
    ClipSpec,
    ObjectSpec,
    render,
    sample_spec,
    trajectory,
)

ATTRIBUTES = ("color", "shape", "direction", "background", "background_kind")
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up", "still": "left"}


def accuracy(specs, noise_std=0.0, seed=0):
    noise = np.random.default_rng(seed)
    scores = {name: [] for name in ATTRIBUTES}
    for spec in specs:
        clip = render(spec)
        if noise_std:
            clip = np.clip(clip + noise.normal(0.0, noise_std, clip.shape), 0.0, 1.0).astype(np.float32)
        result = check_clip(clip, spec.caption)
        for name in ATTRIBUTES:
            scores[name].append(getattr(result, name))
    return {name: float(np.mean(values)) for name, values in scores.items()}


def random_specs(count, seed):
    rng = np.random.default_rng(seed)
    return [sample_spec(rng, "any") for _ in range(count)]


def test_ground_truth_clips_score_right_on_every_attribute():
    measured = accuracy(random_specs(200, seed=0))
    print("ground-truth accuracy:", measured)
    assert all(value >= 0.98 for value in measured.values()), measured


def test_noisy_ground_truth_clips_still_score_right():
    """Per-channel Gaussian noise of 0.05, about what a decent generator leaves."""
    measured = accuracy(random_specs(40, seed=1), noise_std=0.05)
    print("noisy (0.05) ground-truth accuracy:", measured)
    assert all(value >= 0.95 for value in measured.values()), measured


def test_ground_truth_backgrounds_are_perfectly_consistent():
    spec = random_specs(1, seed=2)[0]
    assert check_clip(render(spec), spec.caption).temporal_consistency == pytest.approx(0.0, abs=1e-6)


def test_uint8_clips_read_like_float_clips():
    spec = random_specs(1, seed=3)[0]
    clip = render(spec)
    as_bytes = np.round(clip * 255).astype(np.uint8)
    from_float, from_bytes = check_clip(clip, spec.caption), check_clip(as_bytes, spec.caption)
    assert [getattr(from_float, a) for a in ATTRIBUTES] == [getattr(from_bytes, a) for a in ATTRIBUTES]


def unused_color(spec):
    used = {spec.background_color} | {o.color for o in spec.objects}
    return next(name for name in COLORS if name not in used)


def swapped_captions(spec):
    """Captions of ``spec`` with one attribute changed, keyed by the attribute that must then fail."""
    first = spec.objects[0]
    other_kind = BACKGROUNDS[(BACKGROUNDS.index(spec.background) + 1) % len(BACKGROUNDS)]
    other_shape = {"circle": "square", "square": "triangle", "triangle": "circle"}[first.shape]
    changed_first = {
        "color": replace(first, color=unused_color(spec)),
        "shape": replace(first, shape=other_shape),
        "direction": replace(first, direction=OPPOSITE[first.direction]),
    }
    captions = {
        attribute: replace(spec, objects=(changed,) + spec.objects[1:]).caption
        for attribute, changed in changed_first.items()
    }
    captions["background"] = replace(spec, background_color=unused_color(spec)).caption
    captions["background_kind"] = replace(spec, background=other_kind).caption
    return captions


@pytest.mark.parametrize("seed", [10, 11, 12, 13, 14])
def test_a_caption_with_one_attribute_changed_fails_that_attribute(seed):
    spec = random_specs(1, seed)[0]
    clip = render(spec)
    full_marks = len(spec.objects)
    assert all(getattr(check_clip(clip, spec.caption), a) == 1.0 for a in ATTRIBUTES)
    for attribute, caption in swapped_captions(spec).items():
        result = check_clip(clip, caption)
        # One object of the caption is wrong: an object score drops to (n - 1) / n, a background to 0.
        score = getattr(result, attribute) * full_marks
        assert score <= full_marks - 1 + 1e-9, (attribute, caption, result.details)


def moves_without_bouncing(obj):
    path = trajectory(obj)
    steps = np.outer(np.arange(len(path)), UNIT_VELOCITY[obj.direction]) * obj.speed
    unbounced = np.asarray(obj.start) + steps
    return np.allclose(path, unbounced)


def test_a_clip_played_backwards_moves_the_other_way():
    rng = np.random.default_rng(20)
    specs = []
    while len(specs) < 6:  # a bounce would make the reversed start move the captioned way again
        spec = sample_spec(rng, "any")
        moving = any(o.direction != "still" for o in spec.objects)
        if moving and all(map(moves_without_bouncing, spec.objects)):
            specs.append(spec)
    for spec in specs:
        forwards = check_clip(render(spec), spec.caption)
        backwards = check_clip(render(spec)[::-1], spec.caption)
        for obj, seen_forwards, seen_backwards in zip(
            spec.objects, forwards.details["objects"], backwards.details["objects"]
        ):
            assert seen_forwards["direction"] == obj.direction
            if obj.direction == "still":
                assert seen_backwards["direction"] == "still"
            else:
                assert seen_backwards["direction"] == OPPOSITE[obj.direction], (spec.caption, seen_backwards)


def test_a_hidden_corner_does_not_change_a_shape():
    """A triangle lying on a square: the square is still a square, the triangle still a triangle."""
    spec = ClipSpec(
        background="solid",
        background_color="blue",
        objects=(
            ObjectSpec("square", "red", "still", size=12, start=(14.0, 16.0)),
            ObjectSpec("triangle", "yellow", "still", size=10, start=(20.0, 20.0)),
        ),
    )
    result = check_clip(render(spec), spec.caption)
    assert [o["shape"] for o in result.details["objects"]] == ["square", "triangle"], result.details


def test_noise_clips_score_low():
    rng = np.random.default_rng(30)
    for spec in random_specs(3, seed=31):
        noise = rng.random((16, 32, 32, 3), dtype=np.float32)
        result = check_clip(noise, spec.caption)
        assert result.color == result.shape == result.direction == 0.0, result.details
        assert result.temporal_consistency > 0.2


def test_a_clip_without_a_domain_background_has_no_background_colour():
    black = np.zeros((16, 32, 32, 3), dtype=np.float32)
    result = check_clip(black, "a red circle moving left on a plain blue background")
    assert result.details["background_color"] is None and result.details["background_kind"] is None
    assert result.background == result.background_kind == result.color == 0.0


def test_first_frame_error_is_zero_only_for_the_true_first_frame():
    spec = random_specs(1, seed=40)[0]
    clip = render(spec)
    assert check_clip(clip, spec.caption).first_frame_max_abs_error is None
    assert check_clip(clip, spec.caption, first_frame=clip[0].copy()).first_frame_max_abs_error == 0.0
    perturbed = clip[0].copy()
    perturbed[5, 7, 0] = 0.0 if perturbed[5, 7, 0] > 0.5 else 1.0
    assert check_clip(clip, spec.caption, first_frame=perturbed).first_frame_max_abs_error >= 0.5
    with pytest.raises(ValueError, match="first_frame"):
        check_clip(clip, spec.caption, first_frame=clip[0, :16])


@pytest.mark.parametrize(
    "caption",
    [
        "hello world",
        "",
        "a red hexagon moving left on a plain blue background",  # no such shape
        "a red circle moving left on a plain magenta background",  # no such colour
        "a red circle moving left",  # no background
    ],
)
def test_captions_outside_the_domain_are_refused(caption):
    with pytest.raises(ValueError, match="caption"):
        check_clip(np.zeros((16, 32, 32, 3), dtype=np.float32), caption)


@pytest.mark.parametrize("shape", [(32, 32, 3), (16, 32, 32), (16, 32, 32, 4), (1, 32, 32, 3)])
def test_clips_of_the_wrong_shape_are_refused(shape):
    with pytest.raises(ValueError, match="shape"):
        check_clip(np.zeros(shape, dtype=np.float32), "a red circle moving left on a plain blue background")
