"""Renderer: shapes, value range, projection geometry, z-buffer depth ordering, view consistency."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from svl.data.render import render_views, save_view_grid, view_rotations


def _cloud(n=600, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, n, 3, generator=g)
    return x / x.norm(dim=-1, keepdim=True)  # two unit spheres


def test_shapes_range_and_background():
    xyz = _cloud()
    img, depth = render_views(xyz, num_views=3, size=48, return_depth=True)
    assert img.shape == (2, 3, 3, 48, 48) and img.dtype == torch.float32
    assert depth.shape == (2, 3, 48, 48)
    assert 0.0 <= img.min() and img.max() <= 1.0
    bg = torch.isinf(depth)
    assert bg.any() and (~bg).any()
    assert torch.all(img.permute(0, 1, 3, 4, 2)[bg] == 1.0)  # white background
    # a sphere seen from anywhere covers a disc of radius 0.46 * size, plus about one splat radius
    frac = (~bg).float().mean().item()
    lo, hi = (math.pi * (0.46 * 48 + d) ** 2 / 48**2 for d in (-1.0, 2.5))
    assert lo < frac < hi


def test_rotations_are_orthonormal_and_look_at_origin():
    R = view_rotations(6, elevation=30.0)
    eye = torch.eye(3).expand(6, 3, 3)
    assert torch.allclose(R @ R.transpose(1, 2), eye, atol=1e-6)
    assert torch.allclose(torch.linalg.det(R), torch.ones(6), atol=1e-6)
    # the "right" axis stays horizontal (the gravity axis z projects to image-up)
    assert torch.allclose(R[:, 0, 2], torch.zeros(6), atol=1e-6)
    assert torch.all(R[:, 1, 2] > 0)
    assert torch.allclose(R[:, 2, 2], torch.full((6,), math.sin(math.radians(30))), atol=1e-6)


def test_projection_geometry_matches_hand_computation():
    # camera at azimuth 0 (on +x), no elevation: right = +y, up = +z
    xyz = torch.tensor([[[0.0, 0.5, 0.0], [0.0, 0.0, 0.5]]])
    _, depth = render_views(
        xyz,
        num_views=1,
        size=64,
        elevation=0,
        azimuth_offset=0,
        normalize=False,
        point_radius=0,
        fill_holes=False,
        return_depth=True,
    )
    hits = torch.nonzero(torch.isfinite(depth[0, 0])).tolist()
    col = int((0.5 * 0.92 + 1) * 0.5 * 64)  # point (y=0.5) lands right of centre
    row = int((1 - (0.5 * 0.92 + 1) * 0.5) * 64)  # point (z=0.5) lands above centre
    assert sorted(hits) == sorted([[32, col], [row, 32]])


def test_nearest_point_wins_the_pixel():
    xyz = torch.tensor([[[0.5, 0.0, 0.0], [-0.5, 0.0, 0.0]]])
    rgb = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    kw = dict(size=32, elevation=0, normalize=False, color_mode="flat", fill_holes=False, return_depth=True)
    # camera on +x sees the red point (x=+0.5) in front of the blue one
    img, depth = render_views(xyz, rgb, num_views=1, azimuth_offset=0, **kw)
    assert torch.allclose(img[0, 0, :, 16, 16], torch.tensor([1.0, 0.0, 0.0]))
    assert depth[0, 0, 16, 16].item() == pytest.approx(-0.5, abs=1e-4)
    # from the opposite side (-x) the blue point is nearer; order of points must not matter
    img, depth = render_views(xyz.flip(1), rgb.flip(1), num_views=1, azimuth_offset=180, **kw)
    assert torch.allclose(img[0, 0, :, 16, 16], torch.tensor([0.0, 0.0, 1.0]))
    assert depth[0, 0, 16, 16].item() == pytest.approx(-0.5, abs=1e-4)


def test_views_go_around_the_gravity_axis():
    # view 1 of 4 (azimuth 90) == view 0 of the cloud turned by -90 degrees about z
    g = torch.Generator().manual_seed(1)
    xyz = torch.rand(1, 800, 3, generator=g) * torch.tensor([1.0, 0.4, 0.7]) - 0.3
    c, s = 0.0, -1.0
    rot = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    a = render_views(xyz, num_views=4, size=64, azimuth_offset=0, color_mode="depth")[:, 1]
    b = render_views(xyz @ rot.T, num_views=1, size=64, azimuth_offset=0, color_mode="depth")[:, 0]
    assert (a - b).abs().gt(1e-3).float().mean() < 0.01
    # and the views really differ from each other for an anisotropic shape
    views = render_views(xyz, num_views=4, size=64, azimuth_offset=0)
    assert (views[0, 0] - views[0, 1]).abs().mean() > 0.02


def test_all_colour_modes_and_numpy_input():
    xyz = _cloud(300).numpy()
    rgb = np.random.default_rng(0).random(xyz.shape, dtype=np.float32)
    for mode in ("shaded", "normal", "depth", "flat"):
        out = render_views(xyz, rgb, num_views=2, size=32, color_mode=mode)
        assert out.shape == (2, 2, 3, 32, 32) and torch.isfinite(out).all()


def test_bad_input_raises():
    with pytest.raises(ValueError, match="xyz must be"):
        render_views(torch.zeros(2, 5, 2))
    with pytest.raises(ValueError, match="NaN"):
        render_views(torch.full((1, 4, 3), float("nan")))
    with pytest.raises(ValueError, match="rgb shape"):
        render_views(torch.zeros(1, 4, 3), torch.zeros(1, 5, 3))
    with pytest.raises(ValueError, match="color_mode"):
        render_views(torch.rand(1, 4, 3), color_mode="rainbow")
    with pytest.raises(ValueError, match="num_views"):
        render_views(torch.rand(1, 4, 3), num_views=0)


def test_save_view_grid(tmp_path):
    from PIL import Image

    views = render_views(_cloud(200), num_views=3, size=24)
    path = save_view_grid(views, tmp_path / "grid.png")
    im = np.asarray(Image.open(path))
    assert im.shape == (2 * 26 + 2, 3 * 26 + 2, 3)
    tile = im[2:26, 2:26].astype(np.float32) / 255
    assert np.abs(tile - views[0, 0].permute(1, 2, 0).numpy()).max() <= 1 / 255 + 1e-6
    with pytest.raises(ValueError, match="png"):
        save_view_grid(views, tmp_path / "grid.jpg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]


def _cube():
    v = torch.tensor([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    f = torch.tensor([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))])
    return v, f


def test_mesh_sampling_is_on_the_surface_and_area_uniform():
    from svl.data.render import sample_mesh_points

    v, f = _cube()
    pts, cols = sample_mesh_points(v, f, 6000, vertex_colors=torch.full((8, 3), 0.25))
    assert pts.shape == (6000, 3) and torch.allclose(cols, torch.full((6000, 3), 0.25))
    assert torch.allclose(pts.abs().amax(1), torch.full((6000,), 0.5), atol=1e-6)  # on a face
    on_px = (pts[:, 0] > 0.5 - 1e-6).float().mean().item()
    assert abs(on_px - 1 / 6) < 0.02  # six equal faces get equal shares
    with pytest.raises(ValueError, match="out of range"):
        sample_mesh_points(v, f + 8, 10)


def test_mesh_render_shows_a_solid_face():
    from svl.data.render import render_mesh_views

    v, f = _cube()
    img, depth = render_mesh_views(
        v, f, num_views=1, size=64, elevation=0, azimuth_offset=0, return_depth=True
    )
    assert img.shape == (1, 3, 64, 64)
    half = 0.5 / math.sqrt(0.75) * 0.92  # the +x face after unit-sphere normalisation, in NDC
    lo, hi = int((1 - half) * 32) + 2, int((1 + half) * 32) - 2
    face = depth[0, lo:hi, lo:hi]
    assert torch.isfinite(face).all()  # no holes inside the face
    assert torch.allclose(face, torch.full_like(face, -0.5 / math.sqrt(0.75)), atol=0.02)
    assert torch.isinf(depth[0, :8, :8]).all()  # corners of the frame are background
    frac = torch.isfinite(depth).float().mean().item()
    assert abs(frac - half**2) < 0.06


PINNED = Path(__file__).parent / "data" / "render_pinned.npz"


def test_outputs_match_the_pinned_renders():
    """Images stored from the renderer before it was split into projection/splatting/shading steps.

    Guards the numerics of every colour mode, with and without hole filling; regenerate only for
    an intended change of the pictures.
    """
    ref = np.load(PINNED)
    xyz, rgb = torch.from_numpy(ref["xyz"]), torch.from_numpy(ref["rgb"])
    for mode in ("shaded", "normal", "depth", "flat"):
        for key, colours in ((mode, None), (f"{mode}_rgb", rgb)):
            if key in ref.files:
                out = render_views(xyz, colours, num_views=2, size=16, color_mode=mode)
                torch.testing.assert_close(out, torch.from_numpy(ref[key]), rtol=0, atol=1e-6, msg=key)
    img, depth = render_views(
        xyz, rgb, num_views=2, size=16, color_mode="shaded", fill_holes=False, return_depth=True,
        point_radius=2, elevation=30.0, azimuth_offset=0.0, background=0.5,
    )  # fmt: skip
    torch.testing.assert_close(img, torch.from_numpy(ref["nofill_img"]), rtol=0, atol=1e-6)
    assert torch.equal(torch.isinf(depth), torch.from_numpy(np.isinf(ref["nofill_depth"])))
    torch.testing.assert_close(depth, torch.from_numpy(ref["nofill_depth"]), rtol=0, atol=1e-6)


def test_flat_mode_without_colour_uses_the_missing_colour():
    from svl.conventions import MISSING_COLOR

    img, depth = render_views(_cloud(400), num_views=1, size=32, color_mode="flat", return_depth=True)
    covered = torch.isfinite(depth)[:, :, None].expand_as(img)
    assert covered.any() and torch.all(img[covered] == MISSING_COLOR)
