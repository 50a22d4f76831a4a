"""The CAM overlay shared by the gallery, the study's figures and ``bench cam``, on pixels worked out by hand."""

import numpy as np
import pytest

from bench.run.figures import overlay_cam


def test_overlay_blends_jet_at_045_over_the_image():
    # jet(0) = (0, 0, 0.5) (dark blue), jet(1) = (0.5, 0, 0) (dark red); each pixel = 0.55 image + 0.45 * 255 jet.
    image = np.array([[[0, 0, 0], [255, 255, 255], [100, 50, 200], [0, 0, 0]]], dtype=np.uint8)  # (1, 4, 3)
    cam = np.array([[1.0, 0.0, 1.0, 2.0]], dtype=np.float32)
    overlay = overlay_cam(image, cam)
    assert overlay.dtype == np.uint8 and overlay.shape == (1, 4, 3)
    assert overlay[0, 0].tolist() == [57, 0, 0]  # 0.45 * 127.5 = 57.375
    assert overlay[0, 1].tolist() == [140, 140, 198]  # 0.55 * 255 = 140.25; + 57.375 blue = 197.625
    assert overlay[0, 2].tolist() == [112, 28, 110]  # 55 + 57.375, 27.5, 110
    assert overlay[0, 3].tolist() == overlay[0, 0].tolist()  # values above 1 are clipped to 1
    assert overlay_cam(image, -cam)[0, 0].tolist() == [0, 0, 57]  # below 0 clipped to 0: dark blue


def test_overlay_refuses_maps_of_another_size():
    with pytest.raises(ValueError, match=r"image \(2, 3, 3\) and cam \(3, 2\)"):
        overlay_cam(np.zeros((2, 3, 3), dtype=np.uint8), np.zeros((3, 2)))
