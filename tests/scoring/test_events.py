"""Events from frame scores: the hysteresis alone, then real videos through a scorer that knows
each frame's source photo, and through the shipped ONNX model."""

from __future__ import annotations

from pathlib import Path

import pytest
from media import NOT_SMOKING, SMOKING, make_video, nearest, photo, scene

from smokerdet.errors import ConfigError
from smokerdet.scoring.events import EventRules, EventTracker, Sample, find_events
from smokerdet.scoring.video import open_video

RULES = EventRules(threshold=0.5)  # the defaults: start 2 of 3, end after 4


def events_of(probs: list[float], rules: EventRules = RULES) -> list[tuple]:
    samples = [Sample(i, i / 2, p) for i, p in enumerate(probs)]
    return [(e.start, e.end, e.peak_probability, e.best_frame) for e in find_events(samples, rules)]


def test_one_frame_above_starts_nothing_two_of_three_do() -> None:
    assert events_of([0.1, 0.9, 0.1, 0.1, 0.9, 0.1, 0.1]) == []
    # 0.9 at frame 1, a miss, 0.8 at frame 3: two of the last three. Starts at frame 1.
    assert events_of([0.1, 0.9, 0.2, 0.8, 0.1, 0.1, 0.1, 0.1]) == [(0.5, 2.0, 0.9, 1)]


def test_the_threshold_itself_counts_as_smoking() -> None:
    assert events_of([0.5, 0.5, 0.1, 0.1, 0.1, 0.1]) == [(0.0, 1.0, 0.5, 0)]
    # ... and keeps an event going: it ends at the first frame below (2.5 s), not at 1.0 s.
    assert events_of([0.9, 0.9, 0.5, 0.5, 0.5, 0.1, 0.1, 0.1, 0.1]) == [(0.0, 2.5, 0.9, 0)]


def test_a_short_gap_does_not_split_an_event_and_the_end_is_the_first_frame_below() -> None:
    probs = [0.9, 0.9, 0.1, 0.1, 0.1, 0.95, 0.9, 0.2, 0.2, 0.2, 0.2, 0.1]
    # Three below (frames 2-4) are fewer than 4: one event, ending at frame 7 (3.5 s).
    assert events_of(probs) == [(0.0, 3.5, 0.95, 5)]


def test_an_event_still_open_at_the_end_closes_at_the_last_frame_or_its_first_miss() -> None:
    assert events_of([0.9, 0.9, 0.9]) == [(0.0, 1.0, 0.9, 0)]
    assert events_of([0.9, 0.9, 0.9, 0.1, 0.1]) == [(0.0, 1.5, 0.9, 0)]


def test_online_tells_the_start_then_the_end_and_keeps_only_the_best_payload() -> None:
    tracker = EventTracker(RULES)
    told = []
    for i, p in enumerate([0.1, 0.7, 0.9, 0.8, 0.1, 0.1, 0.1, 0.1]):
        changed = tracker.update(i, i / 2, p, payload=f"image {i}")
        if changed is not None:
            told.append((i, changed.end, changed.peak_probability, changed.best))
    # Starts at frame 2 (two of three), told with the peak so far; ends at frame 7.
    assert told == [(2, None, 0.9, "image 2"), (7, 2.0, 0.9, "image 2")]
    assert tracker.ongoing is None and tracker.finish() is None


def test_custom_rules_and_their_checks_name_the_flags() -> None:
    strict = EventRules(threshold=0.5, start_frames=3, start_window=3, end_frames=1)
    assert events_of([0.9, 0.9, 0.1, 0.9, 0.9, 0.9, 0.1], strict) == [(1.5, 3.0, 0.9, 3)]
    for kwargs, message in [
        (
            {"start_frames": 4, "start_window": 3},
            "--start-frames must be between 1 and --start-window (3), got 4",
        ),
        ({"start_frames": 0}, "--start-frames must be between 1 and --start-window (3), got 0"),
        ({"start_window": 0}, "--start-window must be at least 1, got 0"),
        ({"end_frames": 0}, "--end-frames must be at least 1, got 0"),
        ({"threshold": 1.5}, "--threshold must be between 0 and 1, got 1.5"),
    ]:
        with pytest.raises(ConfigError) as e:
            EventRules(**{"threshold": 0.5, **kwargs})
        assert str(e.value) == message and e.value.exit_code == 2


# --- real videos ------------------------------------------------------------------------------

FPS = 25


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s not smoking, 4 s smoking, 3 s not smoking, 25 fps, H.264 with B-frames."""
    path = tmp_path_factory.mktemp("events") / "clip.mp4"
    segments = scene([(NOT_SMOKING, 3), (SMOKING, 4), (NOT_SMOKING, 3)])
    return make_video(path, segments, fps=FPS, gop=2 * FPS)


def scored(path: Path, score) -> list[Sample]:
    with open_video(path, fps=2) as video:
        return [Sample(f.index, f.time, score(f.image), f.image) for f in video.frames()]


def test_a_smoking_scene_in_a_video_is_one_event_at_the_right_times(clip: Path) -> None:
    sources = {"smoking": photo(SMOKING), "not": photo(NOT_SMOKING)}

    def by_source(image) -> float:  # test data: each frame's probability is its photo's
        return 0.9 if nearest(image, sources) == "smoking" else 0.1

    samples = scored(clip, by_source)
    (event,) = find_events(samples, RULES)
    period = 0.5  # one sampled frame at --fps 2
    assert abs(event.start - 3.0) <= period and abs(event.end - 7.0) <= period
    assert 3.0 <= event.best_time < 7.0 and event.peak_probability == 0.9
    assert nearest(event.best, sources) == "smoking"
    assert event.to_dict().keys() == {
        "start",
        "end",
        "peak_probability",
        "best_frame",
        "best_time",
        "frames",
    }


def test_the_shipped_model_finds_the_same_event(clip: Path) -> None:
    from smokerdet.inference import open_engine

    engine = open_engine("default")
    samples = scored(clip, lambda image: engine.score([image])[0])
    (event,) = find_events(samples, EventRules(threshold=engine.meta.threshold))
    assert abs(event.start - 3.0) <= 0.5 and abs(event.end - 7.0) <= 0.5
    assert event.peak_probability > 0.9
