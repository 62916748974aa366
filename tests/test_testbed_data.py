import numpy as np
import pytest

from tango_prune.testbed import data as D


def test_generator_is_deterministic_and_splits_differ():
    a, b = D.make_sample(D.TEST, 7), D.make_sample(D.TEST, 7)
    assert np.array_equal(a.clip.frames, b.clip.frames)
    assert a.question == b.question
    c = D.make_sample(D.TRAIN, 7)
    assert not np.array_equal(a.clip.frames, c.clip.frames)
    assert a.clip.frames.shape == (D.NUM_FRAMES, D.IMAGE_SIZE, D.IMAGE_SIZE, 3)
    assert a.clip.frames.dtype == np.uint8


def test_questions_are_well_formed_and_cover_every_type():
    seen = set()
    for i in range(120):
        s = D.make_sample(D.TEST, i)
        q = s.question
        assert q.answer in q.options and len(set(q.options)) == 4
        assert 2 <= len(s.clip.objects) <= 4
        assert len({o.shape for o in s.clip.objects}) == len(s.clip.objects)
        assert len({o.color for o in s.clip.objects}) == len(s.clip.objects)
        seen.add(q.qtype)
    assert seen == set(D.QTYPES)


def test_answers_follow_from_the_objects():
    for i in range(60):
        s = D.make_sample(D.TEST, i)
        q, objs = s.question, s.clip.objects
        if q.qtype == "count":
            assert q.answer == D.NUMBERS[len(objs) - 1]
        elif q.qtype == "late":
            assert [o.shape for o in objs if o.appear > 0] == [q.answer]
        elif q.qtype == "static":
            assert [o.shape for o in objs if o.direction == "none"] == [q.answer]
        elif q.qtype == "changer":
            assert [o.shape for o in objs if o.color_after] == [q.answer]


def test_presence_matches_pixels():
    clip = D.make_clip(D.TEST, 3)
    pres = clip.presence()
    for t in range(clip.frames.shape[0]):
        colors = {int(c) - 1 for c in np.unique(clip.color_ids[t]) if c > 0}
        assert colors <= set(np.flatnonzero(pres[t, : len(D.COLORS)]).tolist())


def test_mp4_round_trip(tmp_path):
    clip = D.make_clip(D.TEST, 1)
    path = D.write_mp4(clip.frames, tmp_path / "c.mp4")
    frames, ts = D.read_video(path)
    assert frames.shape == clip.frames.shape
    assert np.allclose(ts, np.arange(D.NUM_FRAMES) / D.FPS)
    assert np.abs(frames.astype(int) - clip.frames.astype(int)).mean() < 10


def test_bad_input_raises():
    with pytest.raises(ValueError, match="index"):
        D.make_clip(D.TEST, -1)
    with pytest.raises(ValueError, match="limit"):
        D.heldout_indices(0)
    with pytest.raises(ValueError, match="video"):
        D.read_video("/nonexistent.mp4")
