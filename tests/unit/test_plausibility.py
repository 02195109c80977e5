"""Frame plausibility: a frame the model cannot judge is undecided, with the check, the value and the limit.

Frames are made here from the project's own sample parts (`render_part`): black, saturated, blurred,
tiny, wrong-size, noisy; the default model's card carries the baseline taught from good parts.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from lineinspect.assemble import single_model_inspector
from lineinspect.core.frame import Frame
from lineinspect.core.inspector import Inspector
from lineinspect.core.model import RuntimeOptions
from lineinspect.core.modelcard import load_card
from lineinspect.core.plausibility import (
    FALLBACK_LIMITS,
    FrameLimits,
    FrameMeasures,
    PartPresent,
    baseline_of_images,
    measure_frame,
    measure_stretched,
)
from lineinspect.core.recipe import Recipe, Roi
from lineinspect.core.result import UndecidedKind, Verdict
from lineinspect.offline.retune import retune
from lineinspect.offline.synthetic import render_part
from tests.helpers.graphs import brightness_anomaly

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT / "models" / "default"
OPTIONS = RuntimeOptions(intra_op_threads=1)


def good_frame(seed: int = 7) -> np.ndarray:
    """A good bracket as the demo camera sees it, (480, 640, 3) BGR uint8."""
    return render_part(np.random.default_rng(seed)).image


def implausible_frames() -> dict[str, tuple[np.ndarray, str]]:
    """name → (frame, the check its reason must name)."""
    good = good_frame()
    noise = np.random.default_rng(1).normal(0, 10, good.shape)
    return {
        "black": (np.zeros_like(good), "brightness (mean level) 0 <"),
        "saturated": (np.full_like(good, 255), "saturated (bright share) 1 >"),
        "blurred": (cv2.GaussianBlur(good, (0, 0), 3), "focus (Laplacian variance)"),
        "tiny": (good[:20, :30], "frame width 30 px < 80 px (min_width_px, model input / 4)"),
        "one pixel": (good[:1, :1], "frame height 1 px < 60 px"),
        "noisy": (np.clip(good + noise, 0, 255).astype(np.uint8), "noise"),
        "lens covered": (np.full_like(good, 60), "contrast 0 <"),
    }


@pytest.fixture(scope="module")
def default_inspector() -> Inspector:
    return single_model_inspector(DEFAULT_MODEL, OPTIONS)


def test_the_default_models_card_carries_a_taught_frame_baseline() -> None:
    card = load_card(DEFAULT_MODEL)
    assert card.frame_baseline is not None and card.frame_baseline.images == 200
    limits = card.frame_baseline.limits()
    assert limits.min_focus is not None and limits.min_focus > 0
    assert limits.min_mean_level is not None and limits.min_mean_level > FALLBACK_LIMITS.min_mean_level


def test_a_good_part_is_plausible_and_carries_its_frame_measures(default_inspector: Inspector) -> None:
    result = default_inspector.inspect(Frame(good_frame()))
    assert result.verdict is Verdict.PASS, result.reason
    assert result.measurements["frame_focus"] is not None and result.measurements["frame_focus"] > 1000
    assert set(result.measurements) >= {"frame_mean_level", "frame_contrast", "frame_noise", "frame_dark_share"}
    assert "plausibility" in result.timings_ms


@pytest.mark.parametrize("name", list(implausible_frames()))
def test_implausible_frame_is_undecided_naming_check_value_and_limit(default_inspector: Inspector, name: str) -> None:
    frame, check = implausible_frames()[name]
    result = default_inspector.inspect(Frame(frame))
    assert result.verdict is Verdict.UNDECIDED, result.reason
    assert result.undecided_kind is UndecidedKind.PLAUSIBILITY
    assert result.reason.startswith("implausible frame: ")
    assert check in result.reason
    assert result.score is None and result.findings == ()
    assert result.to_payload()["undecided_kind"] == "plausibility"


def test_a_frame_of_another_size_than_the_camera_is_configured_for_is_undecided() -> None:
    inspector = Inspector(
        single_model_inspector(DEFAULT_MODEL, OPTIONS).models,
        {"bracket": Recipe(id="bracket", model="default")},
        "bracket",
        camera_limits={"cam1": FrameLimits(width_px=640, height_px=480)},
    )
    small = cv2.resize(good_frame(), (600, 480))
    on_camera = inspector.inspect(Frame(small, camera_id="cam1"))
    assert on_camera.undecided_kind is UndecidedKind.PLAUSIBILITY
    assert "frame width 600 px != 640 px (width_px, camera 'cam1')" in on_camera.reason
    # The same frame uploaded without a camera has no configured size to miss.
    assert inspector.inspect(Frame(small)).verdict is Verdict.PASS
    assert inspector.inspect(Frame(good_frame(), camera_id="cam1")).verdict is Verdict.PASS


def test_a_recipe_overrides_a_taught_limit_and_null_switches_a_check_off() -> None:
    models = single_model_inspector(DEFAULT_MODEL, OPTIONS).models
    blurred = cv2.GaussianBlur(good_frame(), (0, 0), 3)
    strict = Recipe(id="strict", model="default", frame=FrameLimits(min_mean_level=120))
    lax = Recipe(id="lax", model="default", frame=FrameLimits(min_focus=None))
    inspector = Inspector(models, {"strict": strict, "lax": lax}, "strict")
    result = inspector.inspect(Frame(good_frame()), "strict")
    assert result.undecided_kind is UndecidedKind.PLAUSIBILITY
    assert "(min_mean_level, recipe 'strict')" in result.reason
    assert inspector.inspect(Frame(blurred), "lax").undecided_kind is not UndecidedKind.PLAUSIBILITY


def test_part_present_checks_the_region_the_recipe_names() -> None:
    models = single_model_inspector(DEFAULT_MODEL, OPTIONS).models
    rule = PartPresent(x=200, y=150, width=240, height=180, min_mean_level=80)
    inspector = Inspector(models, {"r": Recipe(id="r", model="default", part_present=rule)}, "r")
    assert inspector.inspect(Frame(good_frame())).verdict is Verdict.PASS
    empty = good_frame()
    empty[150:330, 200:440] = 30  # the part is missing where it should lie: only the dark belt
    result = inspector.inspect(Frame(empty))
    assert result.undecided_kind is UndecidedKind.PLAUSIBILITY
    assert "part present: mean level 30.0 < 80 (recipe part_present)" in result.reason


def test_a_card_without_a_baseline_gets_fixed_limits_black_and_saturated_only(tmp_path: Path) -> None:
    inspector = single_model_inspector(brightness_anomaly(tmp_path / "bright"), OPTIONS)
    assert inspector.frame_baseline(None) is None
    black = inspector.inspect(Frame(np.zeros((64, 96, 3), np.uint8)))
    assert black.undecided_kind is UndecidedKind.PLAUSIBILITY and "(min_mean_level, fixed)" in black.reason
    white = inspector.inspect(Frame(np.full((7, 4, 3), 255, np.uint8)))
    assert white.undecided_kind is UndecidedKind.PLAUSIBILITY and "frame width 4 px < 16 px" in white.reason
    # A flat part is possible: without a taught baseline, contrast and focus are not judged.
    assert inspector.inspect(Frame(np.full((64, 96, 3), 40, np.uint8))).verdict is Verdict.PASS


def test_the_measures_do_not_depend_on_the_frame_size_for_the_same_scene() -> None:
    good = good_frame()
    full = measure_frame(good, width_px=320, height_px=240, frame_shape=good.shape)
    half = cv2.resize(good, (320, 240), interpolation=cv2.INTER_AREA)
    small = measure_frame(half, width_px=320, height_px=240, frame_shape=half.shape)
    assert small.focus == pytest.approx(full.focus, rel=0.01)
    assert small.mean_level == pytest.approx(full.mean_level, abs=0.5)


def test_a_baseline_taught_from_good_parts_admits_other_good_parts() -> None:
    baseline = baseline_of_images([good_frame(s) for s in range(20)], width_px=320, height_px=240)
    limits = baseline.limits()
    for seed in range(100, 110):
        m = measure_frame(good_frame(seed), width_px=320, height_px=240, frame_shape=(480, 640, 3))
        assert limits.min_focus is not None and m.focus > limits.min_focus
        assert limits.min_contrast is not None and m.contrast > limits.min_contrast


def test_retune_writes_the_frame_baseline_of_its_good_images(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    for seed in range(12):
        assert cv2.imwrite(str(good / f"g{seed}.png"), good_frame(seed))
    model = single_model_inspector(DEFAULT_MODEL, OPTIONS).models["default"]
    retuned = retune(model, good, 0.05)
    assert retuned.card.frame_baseline is not None and retuned.card.frame_baseline.images == 12
    assert retuned.card.frame_baseline.frame_sizes == ["640x480"]


def grey_first_measures(image: np.ndarray, width_px: int, height_px: int) -> FrameMeasures:
    """The measures as they were taken before: the whole frame turned grey, then resized."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    h, w = gray.shape
    shrinking = w * h > width_px * height_px
    gray = cv2.resize(gray, (width_px, height_px), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return measure_stretched(gray, frame_shape=image.shape)


@pytest.mark.parametrize("size", [(640, 480), (1280, 1024)])
def test_the_measures_are_those_of_the_grey_first_order_but_for_rounding(size: tuple[int, int]) -> None:
    # given: good parts as the demo camera sees them, and at 1280x1024 (with a sensor's noise)
    for seed in range(6):
        image = good_frame(seed)
        if size != image.shape[1::-1]:
            image = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)
            noise = np.random.default_rng(seed).normal(0, 1.0, image.shape)
            image = np.clip(image + noise, 0, 255).astype(np.uint8)
        # when: resized in colour, then grey (the default model's input size)
        new = measure_frame(image, width_px=320, height_px=240, frame_shape=image.shape)
        old = grey_first_measures(image, 320, 240)
        # then: the same to rounding (the noise estimate carries the extra rounding of a colour resize)
        assert new.mean_level == pytest.approx(old.mean_level, abs=0.05)
        assert new.contrast == pytest.approx(old.contrast, rel=0.003)
        assert new.focus == pytest.approx(old.focus, rel=0.005)
        assert new.noise == pytest.approx(old.noise, rel=0.05)
        assert new.dark_share == pytest.approx(old.dark_share, abs=0.001)
        assert new.bright_share == pytest.approx(old.bright_share, abs=0.001)


@pytest.mark.parametrize("roi", [None, (40, 30, 500, 400)])
def test_the_inspector_measures_what_a_taught_baseline_measures(
    default_inspector: Inspector, roi: tuple[int, int, int, int] | None
) -> None:
    # given: the Inspector resizes the region once, for the measures and the model's input
    models = default_inspector.models
    recipe = (
        Recipe(id="r", model="default")
        if roi is None
        else Recipe(id="r", model="default", roi=Roi(x=roi[0], y=roi[1], width=roi[2], height=roi[3]))
    )
    inspector = Inspector(models, {"r": recipe}, "r")
    image = good_frame(3)
    region = image if roi is None else image[roi[1] : roi[1] + roi[3], roi[0] : roi[0] + roi[2]]
    # when
    result = inspector.inspect(Frame(image))
    # then: the measures are measure_frame's, which baseline_of_images uses; the model saw the region as before
    expected = measure_frame(region, width_px=320, height_px=240, frame_shape=image.shape).as_measurements()
    assert {k: result.measurements[k] for k in expected} == expected
    assert result.score == models["default"].infer(np.ascontiguousarray(region)).output.score
