"""Video files through PyAV: sampling, lazy decoding, rotation, and every kind of bad file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from media import NOT_SMOKING, SMOKING, make_audio_only, make_video, photo, scene
from PIL import Image

from smokerdet.errors import ConfigError, VideoError
from smokerdet.scoring.video import check_fps, is_video_path, open_video

FPS = 25


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s not smoking, 4 s smoking, 3 s not smoking at 25 fps, a keyframe every second."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    segments = scene([(NOT_SMOKING, 3), (SMOKING, 4), (NOT_SMOKING, 3)], size=(128, 128))
    return make_video(path, segments, fps=FPS, gop=FPS)


def read(path: Path, fps: float) -> tuple[list, list[str], int]:
    with open_video(path, fps=fps) as video:
        frames = list(video.frames())
        return frames, video.notes, video.decoded


def test_samples_the_first_frame_at_or_after_each_period(clip: Path) -> None:
    frames, notes, _ = read(clip, 2)
    assert len(frames) == 20 and notes == []
    for k, f in enumerate(frames):
        want = k / 2
        assert want <= f.time < want + 1 / FPS  # the first frame at or after k / 2 s
        assert f.index == round(f.time * FPS)
        assert f.image.mode == "RGB" and f.image.size == (128, 128)


def test_every_frame_with_fps_0_and_a_rate_above_the_files_is_clamped_with_a_note(
    clip: Path,
) -> None:
    every, notes, decoded = read(clip, 0)
    assert [f.index for f in every] == list(range(250)) and notes == [] and decoded == 250
    clamped, notes, _ = read(clip, 1000)
    assert [f.index for f in clamped] == list(range(250))
    assert notes == ["--fps 1000 is above the file's 25 frames a second: every frame is scored"]


@pytest.mark.parametrize("fps", [-1.0, float("nan")])
def test_a_negative_fps_is_refused_naming_the_flag(clip: Path, fps: float) -> None:
    with pytest.raises(ConfigError, match=r"^--fps must be 0 \(every frame\) or more, got") as e:
        open_video(clip, fps=fps)
    assert e.value.exit_code == 2 and "--fps 2" in (e.value.hint or "")
    with pytest.raises(ConfigError):
        check_fps(fps)


def test_low_rates_decode_only_what_they_need_and_get_the_same_pictures(clip: Path) -> None:
    every, _, _ = read(clip, 0)
    by_index = {f.index: f for f in every}
    # A keyframe every second: a wanted frame costs its decode, plus the few frames the
    # decoder's threads have in flight, not the 25 of its second.
    for fps, most in ((1, 40), (0.5, 20), (0.2, 8)):
        sampled, _, decoded = read(clip, fps)
        assert [f.time for f in sampled] == [k / fps for k in range(len(sampled))]
        assert decoded <= most, (fps, decoded)
        for f in sampled:  # held-back packets decoded later give the very same pixels
            assert f.image.tobytes() == by_index[f.index].image.tobytes()


def test_b_frames_and_long_groups_of_pictures_are_sampled_right(tmp_path: Path) -> None:
    segments = scene([(NOT_SMOKING, 2), (SMOKING, 2)], size=(64, 64))
    path = make_video(tmp_path / "long_gop.mkv", segments, fps=FPS, gop=100, bframes=2)
    every, _, _ = read(path, 0)
    sampled, _, decoded = read(path, 2.5)
    assert [f.index for f in sampled] == list(range(0, 100, 10))
    for f in sampled:  # B-frames among them, decoded though their held neighbours were not
        assert f.image.tobytes() == every[f.index].image.tobytes()
    assert decoded < 100  # frames held back and referred to by none are skipped
    sampled, _, decoded = read(path, 0.5)
    assert [f.index for f in sampled] == [0, 50] and decoded < 70


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_a_rotated_phone_video_comes_out_upright(tmp_path: Path, rotation: int) -> None:
    # 160x96 stored, a red block in the stored top-left corner.
    stored = np.zeros((96, 160, 3), np.uint8)
    stored[:24, :40] = (255, 0, 0)
    path = make_video(
        tmp_path / "phone.mp4", [(Image.fromarray(stored), 0.2)], fps=FPS, rotation=rotation
    )
    frames, _, _ = read(path, 0)
    image = np.asarray(frames[0].image)
    # The display matrix turns the picture counterclockwise by `rotation` degrees.
    want = np.rot90(stored, k=(rotation // 90) % 4)
    assert image.shape == want.shape
    red = np.argwhere(image[:, :, 0] > 200)
    want_red = np.argwhere(want[:, :, 0] > 200)
    assert np.abs(red.mean(axis=0) - want_red.mean(axis=0)).max() < 3


def test_max_side_shrinks_large_frames_in_ffmpeg_upright_and_keeps_small_ones(
    tmp_path: Path,
) -> None:
    path = make_video(
        tmp_path / "phone.mp4", [(photo(SMOKING, (160, 96)), 0.2)], fps=FPS, rotation=90
    )
    with open_video(path, fps=0, max_side=80) as video:
        frames = list(video.frames())
    assert {f.image.size for f in frames} == {(48, 80)}  # 160x96 halved, then turned
    with open_video(path, fps=0, max_side=500) as video:
        assert {f.image.size for f in video.frames()} == {(96, 160)}


def test_variable_frame_rate_uses_each_frames_own_time(tmp_path: Path) -> None:
    times = [0.0, 0.1, 0.15, 0.9, 1.0, 1.01, 2.3, 2.31, 3.0]
    segments = [(photo(SMOKING, (64, 64)), len(times) / FPS)]
    path = make_video(tmp_path / "vfr.mkv", segments, fps=FPS, times=times)
    sampled, _, _ = read(path, 2)
    # Wanted at 0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0: the first frame at or after each, once.
    assert [(f.index, f.time) for f in sampled] == [
        (0, 0.0),
        (3, 0.9),
        (4, 1.0),
        (6, 2.3),
        (8, 3.0),
    ]


def test_a_4k_clip_gives_full_size_frames(tmp_path: Path) -> None:
    path = make_video(tmp_path / "4k.mp4", [(photo(SMOKING, (3840, 2160)), 3 / FPS)], fps=FPS)
    frames, notes, _ = read(path, 0)
    assert [f.image.size for f in frames] == [(3840, 2160)] * 3 and notes == []


def test_a_truncated_streamable_file_yields_what_decodes_then_a_note(
    clip: Path, tmp_path: Path
) -> None:
    full = make_video(tmp_path / "full.mkv", scene([(SMOKING, 4)], size=(128, 128)), fps=FPS)
    data = full.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    frames, notes, _ = read(cut, 2)
    assert 1 <= len(frames) < 8
    assert len(notes) == 1 and notes[0].endswith("of its 4.0 s: it looks truncated")


def test_an_mp4_cut_before_its_index_is_a_clear_error(clip: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[:20_000])
    with pytest.raises(VideoError) as e:
        open_video(cut)
    assert str(e.value).startswith(f"{cut}: not a video FFmpeg can read")
    assert "cut off before it finished" in (e.value.hint or "") and e.value.exit_code == 1


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.mp4", b"", "empty file (0 bytes)"),
        ("text.mp4", b"hello, not a video\n" * 20, "not a video FFmpeg can read"),
        ("missing.mp4", None, "no such file"),
    ],
)
def test_files_that_are_not_videos_are_clear_errors(
    tmp_path: Path, name: str, content: bytes | None, reason: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VideoError) as e:
        open_video(path)
    assert str(e.value).startswith(f"{path}: {reason}") and e.value.exit_code == 1


def test_an_audio_only_file_is_a_clear_error(tmp_path: Path) -> None:
    path = make_audio_only(tmp_path / "voice.m4a")
    with pytest.raises(VideoError, match=r"voice\.m4a: has no video to look at \(audio only\)$"):
        open_video(path)


def test_a_codec_ffmpeg_cannot_decode_is_a_clear_error(clip: Path, tmp_path: Path) -> None:
    unknown = tmp_path / "unknown_codec.mp4"
    unknown.write_bytes(clip.read_bytes().replace(b"avc1", b"zzzz"))  # the sample entry's codec
    with pytest.raises(VideoError, match="its video codec cannot be decoded by this FFmpeg") as e:
        open_video(unknown)
    assert "ffmpeg -i FILE -c:v libx264" in (e.value.hint or "")


def test_video_suffixes() -> None:
    assert all(is_video_path(f"a.{s}") for s in ("mp4", "MOV", "mkv", "avi", "webm"))
    assert not is_video_path("a.jpg")
