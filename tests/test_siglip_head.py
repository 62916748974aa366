"""``apply(..., saliency_head=DIR)``: the original SigLIP checkpoint's post_layernorm + attention-pooling head
score the patches (the paper's setting), read partially from a saved checkpoint."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import tango_prune as tp
from tango_prune.models.llava_onevision import LlavaOnevisionAdapter
from tango_prune.models.siglip_head import load_saliency_head
from tiny_models import llava_video_ids, tiny_llava

pytestmark = pytest.mark.filterwarnings("ignore:tango-prune. this LLaVA checkpoint has no SigLIP")

T = 3
VISION = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=28, patch_size=4
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("siglip")


@pytest.fixture(scope="module")
def siglip_dir(root):
    """A full SiglipModel (text + vision towers, vision head) saved like google/siglip-so400m-patch14-384."""
    from transformers import SiglipConfig, SiglipModel

    torch.manual_seed(1)
    cfg = SiglipConfig(
        text_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            vocab_size=50,
            max_position_embeddings=16,
        ),
        vision_config=dict(VISION, vision_use_head=True),
    )
    model = SiglipModel(cfg)
    path = root / "siglip"
    model.save_pretrained(path)
    return path, model.vision_model


@pytest.fixture(scope="module")
def llava(root):
    return tiny_llava(root)


def _hand_saliency(vision_model, hidden: torch.Tensor) -> torch.Tensor:
    """Probe attention written out: LN, q from the probe, k from the patches, softmax per head, head mean."""
    x = vision_model.post_layernorm(hidden)
    mha = vision_model.head.attention
    D, nh = x.shape[-1], mha.num_heads
    hd = D // nh
    wq, wk = mha.in_proj_weight[:D], mha.in_proj_weight[D : 2 * D]
    bq, bk = mha.in_proj_bias[:D], mha.in_proj_bias[D : 2 * D]
    q = (vision_model.head.probe.reshape(1, D) @ wq.T + bq).reshape(nh, hd)
    k = (x @ wk.T + bk).reshape(x.shape[0], x.shape[1], nh, hd)
    att = torch.softmax(torch.einsum("hd,nphd->nhp", q, k) / math.sqrt(hd), dim=-1)
    return att.mean(dim=1)


def _pixels(seed=0):
    return torch.randn(1, T, 3, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_loader_reads_only_head_and_layernorm_and_matches_the_checkpoint(siglip_dir):
    path, vision = siglip_dir
    head = load_saliency_head(path, 32)
    assert set(head.state_dict()) == {k for k in head.state_dict() if k.startswith(("post_layernorm.", "head."))}
    for k, v in head.state_dict().items():
        torch.testing.assert_close(v, vision.state_dict()[k], rtol=0, atol=0)


def test_adapter_saliency_equals_hand_computed_probe_attention(siglip_dir, llava):
    path, vision = siglip_dir
    adapter = LlavaOnevisionAdapter(llava, "llava-onevision", saliency_head=path)
    px = _pixels()
    with torch.no_grad():
        _, sal = adapter.encode(
            llava, px, llava.config.vision_feature_layer, llava.config.vision_feature_select_strategy
        )
        hidden = llava.model.vision_tower(px[0], output_hidden_states=True).hidden_states[-1]
        want = _hand_saliency(vision, hidden).reshape(T, 1, 7, 7)
    want = F.interpolate(want, size=[4, 4], mode="bilinear").reshape(1, T, 4, 4)  # the OV layout's pooling
    torch.testing.assert_close(sal, want, atol=1e-6, rtol=1e-5)


@pytest.mark.filterwarnings("default")
def test_apply_with_saliency_head_keeps_the_heads_top_tokens(siglip_dir, llava, recwarn):
    path, vision = siglip_dir
    px = _pixels(3)
    with torch.no_grad():
        hidden = llava.model.vision_tower(px[0], output_hidden_states=True).hidden_states[-1]
        sal = F.interpolate(_hand_saliency(vision, hidden).reshape(T, 1, 7, 7), size=[4, 4], mode="bilinear")
    want = torch.sort(sal.reshape(T, 16), dim=1, descending=True, stable=True).indices[:, :4].sort(dim=1).values
    want = (want + 16 * torch.arange(T)[:, None]).reshape(-1)
    tp.apply(llava, name="topk", retention=0.25, saliency_head=path)
    try:
        assert not [w for w in recwarn if "no SigLIP" in str(w.message)]  # no fallback warning
        with torch.no_grad():
            llava(input_ids=torch.tensor([llava_video_ids(T)]), pixel_values_videos=px)
        kept = tp.models.last_results(llava)[0].indices
    finally:
        tp.remove(llava)
    assert kept.sort().values.tolist() == want.tolist()


def test_bad_sources_are_clear_errors(siglip_dir, root, llava):
    path, _ = siglip_dir
    with pytest.raises(ValueError, match="hidden_size"):
        load_saliency_head(path, 48)
    with pytest.raises(ValueError, match="saliency_head"):
        load_saliency_head(root / "does-not-exist-and-not-a-hub-id", 32)
    from transformers import SiglipVisionConfig, SiglipVisionModel

    nohead = root / "nohead"
    SiglipVisionModel(SiglipVisionConfig(**VISION, vision_use_head=False)).save_pretrained(nohead)
    with pytest.raises(ValueError, match="attention-pooling head"):
        load_saliency_head(nohead, 32)
    with pytest.raises(ValueError, match="saliency_head applies to SigLIP"):
        from tiny_models import tiny_qwen

        tp.apply(tiny_qwen(root), name="topk", saliency_head=path)
