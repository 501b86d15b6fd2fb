"""VL2Spike token targets follow the student's augmentation (issue 27, item 6): the cached teacher
grid of the un-augmented image is flipped / shifted with the crop and flip each sample got."""

from __future__ import annotations

from dataclasses import asdict

import torch
import torch.nn.functional as F

from svl.data.images import ImageBatch, ImageCompose, collate_images
from svl.data.images.transforms import HorizontalFlip, RandomCrop, apply_with_geometry
from svl.tasks.distill import TeacherTargets
from svl.train.distill import DistillWeights, VL2Spike, warp_token_targets

G, D, S = 2, 6, 8  # teacher grid, teacher dim, image size


def _tokens(n: int = 4) -> torch.Tensor:
    return F.normalize(torch.randn(n, G * G, D, generator=torch.Generator().manual_seed(0)), dim=-1)


def _model(tokens: torch.Tensor) -> VL2Spike:
    from svl.models import create_model

    torch.manual_seed(0)
    enc = create_model("spikformer_tiny", out_dim=3, in_channels=1, img_size=S, T=1, head="prototype")
    n = tokens.shape[0]
    targets = TeacherTargets(
        pooled=F.normalize(torch.randn(n, D), dim=-1), tokens=tokens, logits=torch.randn(n, 3),
        text=F.normalize(torch.randn(3, D), dim=-1),
    )  # fmt: skip
    cfg = DistillWeights(svs_level="token", svs_temporal=0.0, spl_proto=0.0, spl_logit=0.0)
    return VL2Spike(enc, targets, 10, **asdict(cfg)).eval()


def _batch(transform, n: int = 4, seed: int = 0) -> ImageBatch:
    """n augmented 8x8 images as a dataset would hand them over, with where their pixels came from."""
    samples = []
    for i in range(n):
        img = torch.rand(1, S, S, generator=torch.Generator().manual_seed(100 + i))
        out, src = apply_with_geometry(transform, img, torch.Generator().manual_seed(seed + 1000 * i))
        samples.append({"image": out, "label": i % 3, "index": i, "source_uv": src})
    return collate_images(samples)


def _grid(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], G, G, -1)


def test_a_flipped_image_gets_the_flipped_token_grid():
    tokens = _tokens()
    model = _model(tokens)
    flipped, weight = model.token_targets(_batch(ImageCompose([HorizontalFlip(p=1.0)])))
    torch.testing.assert_close(_grid(flipped), _grid(tokens).flip(2), rtol=0, atol=1e-6)  # exact cells
    assert torch.all(weight == 1)
    same, weight = model.token_targets(_batch(ImageCompose([HorizontalFlip(p=0.0)])))
    torch.testing.assert_close(same, tokens, rtol=0, atol=1e-6)  # no augmentation: the cached grid


def _draws(seed: int, pad: int) -> tuple[int, int]:
    """(top, left) RandomCrop(pad) draws from this seed (the same stream the transform reads)."""
    g = torch.Generator().manual_seed(seed)
    return tuple(int(torch.randint(0, 2 * pad + 1, (1,), generator=g).item()) for _ in range(2))


def _expected_shift(tokens: torch.Tensor, top: int, left: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent reference: the teacher grid at pixel resolution, zero-padded and cropped like the
    image, pooled per cell over the pixels that show the image."""
    cell = S // G
    full = _grid(tokens).repeat_interleave(cell, 1).repeat_interleave(cell, 2)  # (n, S, S, D)
    full = F.pad(full.permute(0, 3, 1, 2), (pad,) * 4)[..., top : top + S, left : left + S]
    mask = F.pad(torch.ones(1, 1, S, S), (pad,) * 4)[..., top : top + S, left : left + S]
    share = F.avg_pool2d(mask, cell)
    want = F.avg_pool2d(full * mask, cell) / share.clamp_min(1e-6)
    return want.flatten(2).transpose(1, 2), share.flatten(1).expand(tokens.shape[0], -1)


def test_a_crop_shift_gives_the_shifted_grid():
    pad = 4  # one whole teacher cell at 8 px / grid 2
    tokens = _tokens(1)
    model = _model(tokens)
    crop = ImageCompose([RandomCrop(S, padding=pad)])
    # a seed whose crop moves the content one cell to the right and leaves the rows alone
    seed = next(s for s in range(500) if _draws(s, pad) == (pad, 0))
    batch = _batch(crop, n=1, seed=seed)
    got, weight = model.token_targets(batch)
    want = _grid(tokens).clone()
    want[:, :, 1] = want[:, :, 0]  # the left column moved right; the new left column is padding
    torch.testing.assert_close(_grid(got)[:, :, 1], want[:, :, 1], rtol=0, atol=1e-6)
    assert weight.reshape(G, G).tolist() == [[0.0, 1.0], [0.0, 1.0]]
    # any crop: area-weighted mix of the cells it overlaps, padding left out
    for s in range(6):
        top, left = _draws(s, pad)
        got, weight = model.token_targets(_batch(crop, n=1, seed=s))
        want, share = _expected_shift(tokens, top, left, pad)
        torch.testing.assert_close(weight, share)
        keep = share > 0
        torch.testing.assert_close(got[keep], want[keep], rtol=1e-5, atol=1e-6)


def test_tracking_keeps_the_images_and_is_deterministic_under_the_seed():
    aug = ImageCompose([RandomCrop(S, padding=2), HorizontalFlip()])
    img = torch.rand(1, S, S, generator=torch.Generator().manual_seed(3))
    for s in range(8):
        plain = aug(img, torch.Generator().manual_seed(s))
        out, src = apply_with_geometry(aug, img, torch.Generator().manual_seed(s))
        out2, src2 = apply_with_geometry(aug, img, torch.Generator().manual_seed(s))
        assert torch.equal(out, plain)  # the image's random stream is untouched: seeded runs unchanged
        assert torch.equal(src, src2) and torch.equal(out, out2)
    # warp_token_targets on identity geometry reproduces the cached grid
    tokens = _tokens(2)
    _, ident = apply_with_geometry(ImageCompose([]), img, torch.Generator())
    t, w = warp_token_targets(tokens, torch.stack([ident, ident]), G)
    assert torch.all(w == 1)
    torch.testing.assert_close(t, tokens, rtol=0, atol=1e-6)


def test_an_image_dataset_tracks_geometry_only_when_asked():
    from svl.data.images import build_image_dataset

    ds = build_image_dataset("digits", "train", transforms=[{"name": "random_crop", "size": 8, "padding": 1}])
    a = ds[0]
    assert "source_uv" not in a
    ds.track_geometry = True
    b = ds[0]
    assert torch.equal(a["image"], b["image"]) and b["source_uv"].shape == (3, 8, 8)
