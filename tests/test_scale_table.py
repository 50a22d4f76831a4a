"""The study's table by object scale: bins partition the test images, and bin means re-average to the table."""

import numpy as np
import pytest

from bench.scoring.object_scale import NUM_SCALE_BINS
from bench.study.results import FINAL, read_run
from bench.study.scale_table import result_bins, scale_comparisons, scale_markdown, scale_rows


def test_bins_partition_the_images_and_their_means_re_average_to_the_run_metrics(tiny_study):
    study, runs = tiny_study
    results = [read_run(config, FINAL) for config in runs]
    rows = scale_rows(study, results)
    assert len(rows) == 2 * NUM_SCALE_BINS  # GAP and GMP, one row per bin (empty bins too)
    for result in results:
        bins = result_bins(result)
        mine = [row for row in rows if row["value"] == result.config.model.pooling.upper()]
        assert sum(row["images"] for row in mine) == len(result.image_ids) == 24
        for key in ("gt_known_loc_acc", "top1_loc_error"):
            weighted = sum(row[key] * row["images"] for row in mine if row["images"]) / 24
            assert weighted == pytest.approx(result.metrics[key], abs=1e-9)
        # The scale of an image is its largest GT box over the 64 x 64 input frame: recompute one by hand.
        box = max(result.gt_boxes[0], key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
        scale = (box[2] - box[0]) * (box[3] - box[1]) / 64**2
        assert bins[0] == int(np.searchsorted([0.1, 0.2, 0.3, 0.5], scale, side="right"))


def test_per_bin_differences_pair_the_same_images(tiny_study):
    study, runs = tiny_study
    results = [read_run(config, FINAL) for config in runs]
    comparisons = scale_comparisons(study, results)
    gap, gmp = results
    bins = result_bins(gap)
    for row in comparisons:
        index = ["[0, 0.1)", "[0.1, 0.2)", "[0.2, 0.3)", "[0.3, 0.5)", "[0.5, 1]"].index(row["bin"])
        chosen = bins == index
        expected = float(np.mean(gap.per_image[row["metric"]][chosen] - gmp.per_image[row["metric"]][chosen]))
        assert row["images"] == chosen.sum() and row["difference"] == pytest.approx(expected)
        assert row["low"] <= row["difference"] <= row["high"]
    text = scale_markdown(study, scale_rows(study, results), comparisons, "Final epoch")
    assert text.startswith("## Final epoch") and "| GAP - X | bin |" in text


def test_every_study_report_has_its_table_by_object_scale(tiny_study):
    study, _ = tiny_study
    text = (study.study_dir / "by_object_scale.md").read_text()
    assert text.startswith("# Localization by object scale")
    assert text.count("**GT-known loc (%)**") == 2  # final and val-selected
    assert (study.study_dir / "comparison_by_object_scale.csv").is_file()


def test_a_run_scores_its_test_split_by_object_scale_in_metrics_json_and_on_its_page(tiny_run):
    import json

    metrics = json.loads((tiny_run.config.run_dir / "metrics.json").read_text())
    bins = metrics["by_object_scale"]
    assert [row["bin"] for row in bins] == ["[0, 0.1)", "[0.1, 0.2)", "[0.2, 0.3)", "[0.3, 0.5)", "[0.5, 1]"]
    assert sum(row["num_images"] for row in bins) == metrics["num_images"]
    filled = [row for row in bins if row["num_images"]]
    weighted = sum(row["gt_known_loc_acc"] * row["num_images"] for row in filled) / metrics["num_images"]
    assert weighted == pytest.approx(metrics["gt_known_loc_acc"], abs=1e-9)
    page = (tiny_run.config.run_dir / "index.html").read_text(encoding="utf-8")
    assert 'id="by-object-scale"' in page and "[0.5, 1]" in page


def test_a_study_scored_in_the_original_frame_gets_no_figures_rather_than_boxes_of_the_wrong_frame(tiny_study, tmp_path):
    import dataclasses

    from bench.study import figures
    from bench.study.results import by_setting

    study, runs = tiny_study
    results = [read_run(config, FINAL) for config in runs]
    original = [dataclasses.replace(r, config=dataclasses.replace(
        r.config, eval=dataclasses.replace(r.config.eval, frame="original"))) for r in results]
    assert figures.draw_all(study, original, by_setting(study, original), tmp_path) == []
    assert list(tmp_path.iterdir()) == []
    assert len(figures.draw_all(study, results, by_setting(study, results), tmp_path)) >= 4  # input frame: drawn
    with pytest.raises(ValueError, match="needs eval.frame: input"):
        result_bins(original[0])
