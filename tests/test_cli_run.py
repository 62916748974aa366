"""``tango-prune run`` end to end on a generated video and a tiny saved LLaVA-OneVision checkpoint."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from tango_prune.cli import main
from tango_prune.video import load_video
from tiny_models import QWEN_BUILDERS, tiny_llava


def _write_video(path, n=12, fps=6, size=32):
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(n):
            img = np.zeros((size, size, 3), dtype=np.uint8)
            img[:, : (i * 3) % size] = (40 * i % 255, 200, 90)  # a bar that grows: frames differ
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _save_tokenizer(model_dir, specials):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "USER:": 4, "ASSISTANT:": 5}
    vocab.update({f"w{i}": 6 + i for i in range(100)})
    vocab.update(specials)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="</s>",
        additional_special_tokens=list(specials),
    )
    fast.save_pretrained(model_dir)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return _write_video(tmp_path_factory.mktemp("vid") / "clip.mp4")


def test_load_video_uniform_with_real_timestamps(video, tmp_path):
    frames, ts = load_video(video, 4)
    assert frames.shape == (4, 32, 32, 3) and frames.dtype == np.uint8
    assert np.allclose(ts, np.round(np.linspace(0, 11, 4)) / 6)  # frames 0, 4, 7, 11 at 6 fps
    with pytest.raises(ValueError, match="does not exist"):
        load_video(tmp_path / "nope.mp4", 4)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(ValueError, match="cannot be decoded"):
        load_video(bad, 4)


@pytest.mark.filterwarnings("ignore:tango-prune. this LLaVA checkpoint has no SigLIP")
def test_cli_run_llava_end_to_end(video, tmp_path, capsys):
    model_dir = tiny_llava(tmp_path).name_or_path
    _save_tokenizer(model_dir, {"<image>": 120, "<video>": 121})
    rc = main(
        [
            "run",
            "--model",
            model_dir,
            "--video",
            str(video),
            "--question",
            "w1 w2 w3",
            "--retention",
            "0.25",
            "--frames",
            "4",
            "--max-new-tokens",
            "3",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "answer:" in out
    assert "visual tokens: 65 -> " in out
    assert "vision" in out and "pruning" in out and "prefill" in out and "decode" in out
    after = int(out.split("visual tokens: 65 -> ")[1].split()[0])
    assert 1 < after < 65


@pytest.mark.parametrize("family", sorted(QWEN_BUILDERS))
def test_cli_run_qwen_end_to_end(video, tmp_path, capsys, family):
    model_dir = QWEN_BUILDERS[family](tmp_path).name_or_path
    _save_tokenizer(
        model_dir, {"<|image_pad|>": 150, "<|video_pad|>": 151, "<|vision_start|>": 152, "<|vision_end|>": 153}
    )
    rc = main(
        [
            "run",
            "--model",
            model_dir,
            "--video",
            str(video),
            "--question",
            "w1 w2",
            "--retention",
            "0.5",
            "--frames",
            "4",
            "--max-new-tokens",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "visual tokens:" in out and "answer:" in out


def test_cli_run_errors(video, tmp_path, capsys):
    assert main(["run", "--model", str(tmp_path / "missing"), "--video", str(video), "--question", "q"]) == 2
    assert "does not exist" in capsys.readouterr().err
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    assert main(["run", "--model", str(other), "--video", str(video), "--question", "q"]) == 2
    assert "unsupported model class" in capsys.readouterr().err
    model_dir = tiny_llava(tmp_path, name="llava_cli_err").name_or_path
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"garbage")
    assert main(["run", "--model", model_dir, "--video", str(bad), "--question", "q"]) == 2
    assert "cannot be decoded" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:tango-prune. this LLaVA checkpoint has no SigLIP")
def test_cli_run_no_prune_keeps_every_token_and_answers_like_the_upstream_model(video, tmp_path, capsys):
    import torch
    import transformers

    from tango_prune.models import family_for
    from tango_prune.video import load_video

    m = tiny_llava(tmp_path, name="llava_noprune")
    model_dir = m.name_or_path
    _save_tokenizer(model_dir, {"<image>": 120, "<video>": 121})
    rc = main(
        [
            "run",
            "--model",
            model_dir,
            "--video",
            str(video),
            "--question",
            "w1 w2",
            "--frames",
            "4",
            "--max-new-tokens",
            "3",
            "--no-prune",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "visual tokens: 65 -> 65" in out
    # the same answer as the unpatched upstream model on the same inputs
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    frames, ts = load_video(video, 4)
    fam = family_for(m)
    kw = fam.inputs_from_frames(m.config, tok, frames, ts, "w1 w2", *fam.normalisation)
    kw.pop("video_timestamps")
    with torch.no_grad():
        ref = m.generate(**kw, max_new_tokens=3, do_sample=False)
    answer = tok.decode(ref[0, kw["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    assert f"answer: {answer}" in out
