"""Vision preprocessing (omniref/vision/preprocess.py) against the goldens and against independent rules.

The goldens pin the exact arithmetic (resized bit-exact, pixel values rel <= 1e-6); the other tests check
the resize rule on many sizes and aspect ratios, colour conversion, the patch order by direct indexing,
videos with odd frame counts, frame sampling and the refusals.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from omniref import stages
from omniref.errors import MediaError
from omniref.golden import Case
from omniref.vision import preprocess as pp

PIXEL_REL = 1e-6      # docs/golden_format.md §7: image/video pixel values


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


# ----------------------------------------------------------------------------------------------------------
# goldens
# ----------------------------------------------------------------------------------------------------------
def _cases_with(golden_cases, key):
    cases = [Case(d) for d in golden_cases]
    cases = [c for c in cases if key in c.golden]
    if not cases:
        pytest.skip(f"no golden case holds {key}")
    return cases


def test_golden_image_stage(golden_cases):
    for case in _cases_with(golden_cases, "image.raw"):
        got = stages.image_stage(case)
        g = case.golden
        assert set(got) == {k for k in ("image.resized", "image.pixel_values", "image.grid_thw") if k in g}
        if "image.resized" in g:
            assert got["image.resized"].dtype == np.uint8
            np.testing.assert_array_equal(got["image.resized"], g["image.resized"], err_msg=case.name)
        np.testing.assert_array_equal(got["image.grid_thw"], g["image.grid_thw"], err_msg=case.name)
        assert got["image.pixel_values"].shape == g["image.pixel_values"].shape
        assert got["image.pixel_values"].dtype == np.float32
        assert _rel(got["image.pixel_values"], g["image.pixel_values"]) <= PIXEL_REL, case.name


def test_golden_video_stage(golden_cases):
    for case in _cases_with(golden_cases, "video.raw"):
        got = stages.video_stage(case)
        g = case.golden
        np.testing.assert_array_equal(got["video.grid_thw"], g["video.grid_thw"], err_msg=case.name)
        assert got["video.pixel_values"].shape == g["video.pixel_values"].shape
        assert _rel(got["video.pixel_values"], g["video.pixel_values"]) <= PIXEL_REL, case.name
        if "video.second_per_grid" in g:
            np.testing.assert_array_equal(got["video.second_per_grid"], g["video.second_per_grid"])


# ----------------------------------------------------------------------------------------------------------
# smart_resize
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("hw, factor, expected", [
    ((181, 263), 32, (192, 256)),     # plain rounding (image_basic)
    ((80, 48), 32, (64, 64)),         # 2.5 -> 2 and 1.5 -> 2: Python's round is half-to-even
    ((1080, 1920), 28, (1092, 1932)),  # patch 14 factor
    ((10, 10), 28, (56, 56)),         # below min_pixels: grow by sqrt(3136/100) and round up
    ((1, 1), 32, (64, 64)),           # tiny image: sides rounded to 0 are grown back
    ((10, 2000), 32, (32, 800)),      # aspect ratio 200 is still accepted
    ((4000, 6000), 32, (2912, 4384)),  # above max_pixels: shrink by sqrt(HW/max) and round down
])
def test_smart_resize_examples(hw, factor, expected):
    assert pp.smart_resize(*hw, factor) == expected


def test_smart_resize_video_budget():
    # the Omni processor's video budget (131072..786432): 256x512 is a fixed point, 1000x1000 shrinks
    assert pp.smart_resize(256, 512, 32, pp.VIDEO_MIN_PIXELS, pp.VIDEO_MAX_PIXELS) == (256, 512)
    assert pp.smart_resize(1000, 1000, 32, pp.VIDEO_MIN_PIXELS, pp.VIDEO_MAX_PIXELS) == (864, 864)


def test_smart_resize_rules_over_many_sizes():
    rng = np.random.default_rng(0)
    for factor in (28, 32):
        for _ in range(400):
            aspect = math.exp(rng.uniform(-math.log(150), math.log(150)))
            area = math.exp(rng.uniform(math.log(50), math.log(4e7)))
            H = max(1, int(round(math.sqrt(area / aspect))))
            W = max(1, int(round(math.sqrt(area * aspect))))
            if max(H, W) / min(H, W) > 200:
                continue
            h, w = pp.smart_resize(H, W, factor)
            assert h % factor == 0 and w % factor == 0 and h >= factor and w >= factor
            assert h * w >= pp.IMAGE_MIN_PIXELS
            if h > factor and w > factor:      # the max(factor, .) floor can overshoot only for slivers
                assert h * w <= pp.IMAGE_MAX_PIXELS
            if pp.IMAGE_MIN_PIXELS <= round(H / factor) * round(W / factor) * factor ** 2 <= pp.IMAGE_MAX_PIXELS:
                assert abs(h - H) <= factor / 2 and abs(w - W) <= factor / 2   # within budget: nearest multiple


@pytest.mark.parametrize("hw", [(10, 2001), (2001, 10), (1, 201), (3, 1000)])
def test_smart_resize_refuses_extreme_aspect_ratio(hw):
    with pytest.raises(ValueError, match="absolute aspect ratio must be smaller than 200"):
        pp.smart_resize(*hw, 32)
    with pytest.raises(ValueError, match="absolute aspect ratio"):
        pp.preprocess_image(np.zeros(hw + (3,), np.uint8), 16, 2)


@pytest.mark.parametrize("args", [(0, 10, 32), (10, -1, 32), (10, 10, 0), (10.5, 10, 32)])
def test_smart_resize_refuses_bad_sizes(args):
    with pytest.raises(ValueError):
        pp.smart_resize(*args)


# ----------------------------------------------------------------------------------------------------------
# patch order, by direct indexing
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p, m, T, gh, gw", [(16, 2, 2, 4, 6), (14, 2, 4, 2, 4), (4, 3, 6, 3, 6), (2, 1, 2, 3, 2)])
def test_patchify_order(p, m, T, gh, gw):
    rng = np.random.default_rng(1)
    frames = rng.standard_normal((T, gh * p, gw * p, 3)).astype(np.float32)
    pv, grid = pp.patchify(frames, p, m, 2)
    t = T // 2
    assert grid.tolist() == [[t, gh, gw]] and pv.shape == (t * gh * gw, 3 * 2 * p * p)
    row = 0
    for ti in range(t):
        for br in range(gh // m):
            for bc in range(gw // m):
                for i in range(m):
                    for j in range(m):
                        r, c = br * m + i, bc * m + j
                        patch = frames[2 * ti:2 * ti + 2, r * p:(r + 1) * p, c * p:(c + 1) * p, :]  # [2, p, p, 3]
                        np.testing.assert_array_equal(pv[row], patch.transpose(3, 0, 1, 2).reshape(-1))
                        row += 1


def test_patchify_refuses_unaligned_frames():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        pp.patchify(np.zeros((2, 40, 64, 3), np.float32), 16, 2)


# ----------------------------------------------------------------------------------------------------------
# images: sizes, colour conversion, files
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("H, W, p", [(181, 263, 16), (150, 212, 16), (37, 500, 14), (900, 60, 14), (64, 64, 16),
                                     (5, 7, 16), (480, 640, 14)])
def test_preprocess_image_shapes(H, W, p):
    rng = np.random.default_rng(H * W)
    img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    out = pp.preprocess_image(img, p, 2)
    h, w = pp.smart_resize(H, W, 2 * p)
    assert out.resized.shape == (h, w, 3) and out.resized.dtype == np.uint8
    assert out.grid_thw.tolist() == [[1, h // p, w // p]] and out.grid_thw.dtype == np.int64
    assert out.pixel_values.shape == (h // p * (w // p), 3 * 2 * p * p)
    assert out.pixel_values.dtype == np.float32
    assert out.pixel_values.min() >= -1 and out.pixel_values.max() <= 1
    # a still image is a clip of two identical frames: both temporal halves of every row are equal
    rows = out.pixel_values.reshape(-1, 3, 2, p * p)
    np.testing.assert_array_equal(rows[:, :, 0], rows[:, :, 1])
    # the values are (pixel/255 - 0.5)/0.5 of the resized image: check the first patch by hand
    first = out.resized[:p, :p].astype(np.float64).transpose(2, 0, 1).reshape(3, -1) / 255 * 2 - 1
    np.testing.assert_allclose(rows[0, :, 0], first, atol=1e-6)


def test_resize_is_pillow_bicubic():
    img = np.random.default_rng(3).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    out = pp.preprocess_image(img, 16, 2)
    ref = np.asarray(Image.fromarray(img).resize((out.resized.shape[1], out.resized.shape[0]), Image.BICUBIC))
    np.testing.assert_array_equal(out.resized, ref)


def test_grayscale_is_replicated_to_rgb():
    gray = np.random.default_rng(4).integers(0, 256, (50, 70), dtype=np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    np.testing.assert_array_equal(pp.to_rgb(gray), rgb)
    np.testing.assert_array_equal(pp.to_rgb(gray[..., None]), rgb)
    a, b = pp.preprocess_image(gray, 16, 2), pp.preprocess_image(rgb, 16, 2)
    np.testing.assert_array_equal(a.pixel_values, b.pixel_values)


def test_rgba_is_composited_on_white():
    rng = np.random.default_rng(5)
    rgba = rng.integers(0, 256, (40, 60, 4), dtype=np.uint8)
    rgba[:20, :, 3] = 255                     # opaque half: colours unchanged
    rgba[20:, :, 3] = 0                       # transparent half: white
    out = pp.to_rgb(rgba)
    np.testing.assert_array_equal(out[:20], rgba[:20, :, :3])
    assert (out[20:] == 255).all()
    half = rgba.copy()
    half[..., 3] = 128                        # half transparent: between the colour and white
    mixed = pp.to_rgb(half).astype(int)
    expect = (half[..., :3].astype(float) * 128 + 255 * 127) / 255
    assert np.abs(mixed - expect).max() <= 1


def test_load_image_files(tmp_path):
    rng = np.random.default_rng(6)
    rgb = rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    np.testing.assert_array_equal(pp.load_image(tmp_path / "a.png"), rgb)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")          # grayscale PNG
    np.testing.assert_array_equal(pp.load_image(tmp_path / "g.png"), np.repeat(rgb[..., :1], 3, axis=2))
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")      # palette PNG -> RGB
    assert pp.load_image(tmp_path / "p.png").shape == (33, 47, 3)
    yy, xx = np.mgrid[:33, :47]
    smooth = np.stack([yy * 7, xx * 5, 255 - yy * 3 - xx * 2], axis=2).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "a.jpg", quality=95)    # lossy: close, not equal
    jpg = pp.load_image(str(tmp_path / "a.jpg"))
    assert jpg.shape == (33, 47, 3) and np.abs(jpg.astype(int) - smooth).mean() < 3
    out = pp.preprocess_image(tmp_path / "a.png", 16, 2)            # paths go straight in
    np.testing.assert_array_equal(out.pixel_values, pp.preprocess_image(rgb, 16, 2).pixel_values)


def test_load_image_errors(tmp_path):
    with pytest.raises(MediaError, match="missing.png: no such image file"):
        pp.load_image(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match="junk.png"):
        pp.load_image(tmp_path / "junk.png")
    good = tmp_path / "t.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(good)
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:60])
    with pytest.raises(ValueError, match="trunc.png"):
        pp.load_image(tmp_path / "trunc.png")


@pytest.mark.parametrize("bad, match", [(np.zeros((4, 4, 3), np.float32), "uint8"),
                                        (np.zeros((4, 4, 5), np.uint8), "C in 1..4"),
                                        (np.zeros((0, 4, 3), np.uint8), "empty")])
def test_bad_image_arrays(bad, match):
    with pytest.raises(MediaError, match=match):
        pp.preprocess_image(bad, 16, 2)


# ----------------------------------------------------------------------------------------------------------
# videos
# ----------------------------------------------------------------------------------------------------------
def test_video_multi_grid_and_odd_frames():
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 256, (5, 256, 512, 3), dtype=np.uint8)   # a fixed point of the video budget
    out = pp.preprocess_video(frames, 16, 2, fps=4.0)
    assert out.grid_thw.tolist() == [[3, 16, 32]]                     # 5 frames -> 3 grids (last repeated)
    assert out.second_per_grid == pytest.approx(0.5)
    rows = out.pixel_values.reshape(3, 16 * 32, 3, 2, 16, 16)
    x = (frames.astype(np.float32) - 127.5) / 127.5
    # grid 1 holds frames 2 and 3; grid 2 holds frame 4 twice
    np.testing.assert_array_equal(rows[1, 0, :, 0], x[2, :16, :16].transpose(2, 0, 1))
    np.testing.assert_array_equal(rows[1, 0, :, 1], x[3, :16, :16].transpose(2, 0, 1))
    np.testing.assert_array_equal(rows[2, :, :, 0], rows[2, :, :, 1])
    np.testing.assert_array_equal(rows[2, 0, :, 0], x[4, :16, :16].transpose(2, 0, 1))


def test_video_resampled_when_not_a_fixed_point():
    frames = np.random.default_rng(8).integers(0, 256, (2, 300, 400, 3), dtype=np.uint8)
    out = pp.preprocess_video(frames, 16, 2)
    h, w = pp.smart_resize(300, 400, 32, pp.VIDEO_MIN_PIXELS, pp.VIDEO_MAX_PIXELS)
    assert out.resized.shape == (2, h, w, 3) and out.grid_thw.tolist() == [[1, h // 16, w // 16]]
    assert out.second_per_grid == 2.0                                 # fps defaults to 1.0


def test_video_refusals():
    with pytest.raises(MediaError, match="uint8"):
        pp.preprocess_video(np.zeros((2, 64, 64, 3), np.float32), 16, 2)
    with pytest.raises(MediaError, match="T, H, W >= 1"):
        pp.preprocess_video(np.zeros((0, 64, 64, 3), np.uint8), 16, 2)
    with pytest.raises(MediaError, match="T, H, W >= 1"):
        pp.preprocess_video(np.zeros((2, 0, 64, 3), np.uint8), 16, 2)
    with pytest.raises(ValueError, match="fps"):
        pp.preprocess_video(np.zeros((2, 256, 256, 3), np.uint8), 16, 2, fps=0.0)
    with pytest.raises(ValueError, match="absolute aspect ratio"):
        pp.preprocess_video(np.zeros((2, 2, 600, 3), np.uint8), 16, 2)


def test_seconds_per_grid():
    assert pp.seconds_per_grid(2.0) == 1.0 and pp.seconds_per_grid() == 2.0
    assert pp.seconds_per_grid(3.0) == float(np.float32(2 / 3))


def test_sample_frame_indices():
    # 10 frames at 5 fps sampled at 2 fps -> 4 frames (the min_frames floor), spread as floor(i * 10/4)
    np.testing.assert_array_equal(pp.sample_frame_indices(10, video_fps=5, fps=2), [0, 2, 5, 7])
    # 300 frames at 30 fps sampled at 2 fps -> 20 frames, every 15th
    np.testing.assert_array_equal(pp.sample_frame_indices(300, video_fps=30, fps=2), np.arange(0, 300, 15))
    # an explicit count is rounded to a multiple of temporal_patch_size (5 -> round(2.5) * 2 = 4)
    np.testing.assert_array_equal(pp.sample_frame_indices(8, num_frames=5), [0, 2, 4, 6])
    # the max_frames cap, floored to a multiple of 2
    assert len(pp.sample_frame_indices(1000, video_fps=10, fps=10, max_frames=33)) == 32
    np.testing.assert_array_equal(pp.sample_frame_indices(7), np.arange(7))      # no sampling asked
    with pytest.raises(ValueError, match="mutually exclusive"):
        pp.sample_frame_indices(10, video_fps=5, fps=2, num_frames=4)
    with pytest.raises(ValueError, match="exceeds"):
        pp.sample_frame_indices(4, num_frames=6)
    with pytest.raises(ValueError, match="video_fps"):
        pp.sample_frame_indices(10, fps=2)
    with pytest.raises(ValueError):
        pp.sample_frame_indices(1, video_fps=1, fps=1)           # cannot make one pair of frames
