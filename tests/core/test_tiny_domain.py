import numpy as np
import pytest

from hsa_video.tiny.domain import (
    COLORS,
    FRAMES,
    HELD_OUT_BACKGROUNDS,
    HELD_OUT_OBJECTS,
    SIZE,
    ClipSpec,
    ObjectSpec,
    object_masks,
    parse_caption,
    render,
    render_background,
    sample_spec,
    shape_mask,
    trajectory,
)


def test_sampling_is_seeded():
    a = [sample_spec(np.random.default_rng(7)).caption for _ in range(1)]
    b = [sample_spec(np.random.default_rng(7)).caption for _ in range(1)]
    assert a == b


def test_train_split_never_contains_held_out_combinations_and_held_out_always_does():
    rng = np.random.default_rng(0)
    for _ in range(300):
        spec = sample_spec(rng, "train")
        assert (spec.background, spec.background_color) not in HELD_OUT_BACKGROUNDS
        assert all((o.color, o.shape) not in HELD_OUT_OBJECTS for o in spec.objects)
        assert sample_spec(rng, "held_out").held_out


def test_captions_round_trip_through_the_parser():
    rng = np.random.default_rng(1)
    for _ in range(200):
        spec = sample_spec(rng, "any")
        parsed = parse_caption(spec.caption)
        assert parsed["background"] == spec.background
        assert parsed["background_color"] == spec.background_color
        assert [(o["color"], o["shape"], o["direction"]) for o in parsed["objects"]] == [
            (o.color, o.shape, o.direction) for o in spec.objects
        ]


@pytest.mark.parametrize("caption", ["hello world", "a red blob moving left on a plain blue background", ""])
def test_non_domain_captions_parse_to_none(caption):
    assert parse_caption(caption) is None


def test_render_shape_range_and_object_colour():
    obj = ObjectSpec("square", "red", "right", size=10, speed=1.0, start=(8.0, 16.0))
    spec = ClipSpec("solid", "blue", (obj,))
    clip = render(spec)
    assert clip.shape == (FRAMES, SIZE, SIZE, 3) and clip.dtype == np.float32
    assert 0 <= clip.min() and clip.max() <= 1
    red = np.asarray(COLORS["red"]) / 255
    assert np.allclose(clip[0, 16, 8], red) and np.allclose(clip[0, 0, 0], np.asarray(COLORS["blue"]) / 255)


def test_objects_move_in_their_direction_and_bounce_inside_the_frame():
    obj = ObjectSpec("circle", "red", "left", size=10, speed=2.0, start=(25.0, 16.0))
    track = trajectory(obj, frames=30)
    assert np.all(np.diff(track[:8, 0]) == -2.0) and np.all(track[:, 1] == 16.0)
    assert track[:, 0].min() >= 5.0 and track[:, 0].max() <= 27.0
    assert np.any(np.diff(track[:, 0]) > 0)  # it came back after the wall


def test_every_sampled_clip_keeps_its_first_eight_frames_before_any_bounce():
    rng = np.random.default_rng(3)
    for _ in range(200):
        for obj in sample_spec(rng, "any").objects:
            steps = np.diff(trajectory(obj)[:8], axis=0)
            assert np.allclose(steps, steps[0])


def test_shape_fill_ratios():
    for shape, expected in (("square", 1.0), ("circle", np.pi / 4), ("triangle", 0.5)):
        mask = shape_mask(shape, 16, 16, 20)
        rows, cols = np.nonzero(mask)
        box = (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
        assert mask.sum() / box == pytest.approx(expected, abs=0.08)
    with pytest.raises(ValueError, match="unknown shape"):
        shape_mask("hexagon", 16, 16, 10)


def test_object_masks_are_exactly_the_pixels_the_objects_paint():
    rng = np.random.default_rng(3)
    for _ in range(20):
        spec = sample_spec(rng, "any")
        clip, background = render(spec), render_background(spec)
        masks = object_masks(spec)
        assert masks.shape == (spec.frames, spec.size, spec.size)
        changed = (clip != background[None]).any(axis=-1)
        assert not (changed & ~masks).any()  # nothing outside the masks differs from the background
        assert masks.sum() > 0
