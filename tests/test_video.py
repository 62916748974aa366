"""The one video decoder: timestamp resets, audio-only files, the testbed reader built on it."""

from __future__ import annotations

import numpy as np
import pytest

from tango_prune.testbed import data as D
from tango_prune.video import load_video, monotonic_times

av = pytest.importorskip("av")


def _write_ts(path, n: int, base: int) -> None:
    with av.open(str(path), "w", format="mpegts") as out:
        st = out.add_stream("mpeg2video", rate=10)
        st.width = st.height = 32
        st.pix_fmt = "yuv420p"
        for i in range(n):
            img = np.full((32, 32, 3), base + i * 20, np.uint8)
            for p in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in st.encode():
            out.mux(p)


def test_concatenated_transport_streams_get_continuous_time(tmp_path):
    """Two .ts files glued together restart their clock; the second part must follow the first in time."""
    a, b, both = tmp_path / "a.ts", tmp_path / "b.ts", tmp_path / "both.ts"
    _write_ts(a, 6, 0)
    _write_ts(b, 6, 120)
    both.write_bytes(a.read_bytes() + b.read_bytes())
    with av.open(str(both)) as c:
        raw = [f.time for f in c.decode(video=0)]
    assert raw[6] < raw[5]  # the file really resets its clock
    frames, ts = load_video(both, 12)
    assert frames.shape == (12, 32, 32, 3)
    assert np.all(np.diff(ts) > 0)
    np.testing.assert_allclose(np.diff(ts), 0.1, atol=1e-6)
    assert frames[6, 0, 0, 0] > frames[5, 0, 0, 0]  # order of the file kept


def test_monotonic_times_rules():
    np.testing.assert_array_equal(monotonic_times([0.0, 0.5, 1.0], 2.0), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(monotonic_times([1.0, 2.0, 0.0, 1.0], None), [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(monotonic_times([1.0, 2.0, 0.0, 1.0], 4.0), [1.0, 2.0, 2.25, 3.25])
    np.testing.assert_allclose(monotonic_times([5.0, 5.0, 0.0], None), [5.0, 5.0, 6.0])


def test_audio_only_file_is_a_clear_error(tmp_path):
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w", format="wav") as out:
        st = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in st.encode(frame):
            out.mux(p)
        for p in st.encode():
            out.mux(p)
    with pytest.raises(ValueError, match="has no video stream"):
        load_video(path, 4)
    with pytest.raises(ValueError, match="has no video stream"):
        D.read_video(path)


def test_testbed_reader_is_the_library_decoder_resized(tmp_path):
    path = tmp_path / "clip.ts"
    _write_ts(path, 10, 0)
    frames, ts = load_video(path, 4)
    small, ts2 = D.read_video(path, 4, 16)
    np.testing.assert_array_equal(ts, ts2)
    assert small.shape == (4, 16, 16, 3)
    np.testing.assert_allclose(small.reshape(4, -1).mean(1), frames.reshape(4, -1).mean(1), atol=2)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_frame_count_must_be_a_positive_int(tmp_path, bad):
    path = tmp_path / "clip.ts"
    _write_ts(path, 3, 0)
    with pytest.raises(ValueError, match="num_frames"):
        load_video(path, bad)
