"""What the figures mark: the val-selected epoch, the three taus, each box's hit or miss (issue 30).

The ``*_figure`` functions return the figure unsaved, so these tests read the artists it holds; a tiny run
checks that the pipeline hands them the epoch and taus its own files record.
"""

import json
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
from helpers import hand_made_run

import bench.run.figures as run_figures
import bench.study.figures as study_figures
from bench.config import StudyConfig
from bench.run.figures import (
    CURVE_STYLES,
    HIT_COLOUR,
    MISS_COLOUR,
    box_verdict,
    gallery_figure,
    history_figure,
    sweep_figure,
    tau_marks,
)
from bench.run.folder import CURVE_COLUMN, VAL_CURVE_COLUMN
from bench.run.pipeline import SELECTION_RULE, run, select_epoch
from bench.scoring.evaluation import GalleryItem
from bench.study.results import by_setting, read_history


def vertical_lines(figure: plt.Figure) -> list[tuple[int, str, float]]:
    """``(axis index, legend label, x)`` of every vertical line (``axvline``) in ``figure``."""
    found = []
    for index, axis in enumerate(figure.axes):
        for line in axis.lines:
            x, y = line.get_xdata(), line.get_ydata()
            if len(x) == 2 and x[0] == x[1] and list(y) == [0, 1]:
                found.append((index, line.get_label(), float(x[0])))
    return found


def markers(figure: plt.Figure, marker: str) -> list[tuple[str, list[float], list[float]]]:
    """``(label, xs, ys)`` of every line drawn as ``marker`` alone (no line between the points)."""
    return [(line.get_label(), [float(v) for v in line.get_xdata()], [float(v) for v in line.get_ydata()])
            for axis in figure.axes for line in axis.lines
            if line.get_marker() == marker and line.get_linestyle() == "None"]


# ----------------------------------------------------------------------------- the gallery's captions


def test_a_box_is_a_hit_at_the_metrics_threshold_and_its_number_never_contradicts_it():
    assert box_verdict(0.57) == ("\u2713 hit: IoU 0.57 \u2265 0.5", HIT_COLOUR)
    assert box_verdict(0.5) == ("\u2713 hit: IoU 0.50 \u2265 0.5", HIT_COLOUR)  # exactly 0.5 counts, as in the metrics
    assert box_verdict(0.4999) == ("\u2717 miss: IoU 0.49 < 0.5", MISS_COLOUR)  # not "0.50 < 0.5"
    assert box_verdict(0.123) == ("\u2717 miss: IoU 0.12 < 0.5", MISS_COLOUR)
    assert box_verdict(0.0) == ("\u2717 miss: IoU 0.00 < 0.5", MISS_COLOUR)


def _item(label: int, predicted: int, iou: float) -> GalleryItem:
    return GalleryItem(image=np.zeros((16, 16, 3), np.uint8), cam=np.zeros((16, 16), np.float32),
                       gt_boxes=np.array([[2.0, 2, 10, 10]]), box=np.array([3.0, 3, 9, 9]), label=label,
                       predicted=predicted, iou=iou)


def test_gallery_names_each_class_above_and_marks_each_box_below_clear_of_the_title():
    items = [_item(0, 0, 0.8), _item(0, 1, 0.3), _item(1, 1, 0.5), _item(1, 0, 0.1), _item(0, 0, 0.45)]
    figure = gallery_figure(items, ["cat", "dog"], "run: GAP CAM")
    axes = figure.axes  # 2 rows of 4; the last 3 are empty
    assert [axis.get_title() for axis in axes[:5]] == ["cat", "dog (wrong class)", "dog", "cat (wrong class)", "cat"]
    assert [[(text.get_text(), text.get_color()) for text in axis.texts] for axis in axes[:5]] == [
        [("\u2713 hit: IoU 0.80 \u2265 0.5", HIT_COLOUR)], [("\u2717 miss: IoU 0.30 < 0.5", MISS_COLOUR)],
        [("\u2713 hit: IoU 0.50 \u2265 0.5", HIT_COLOUR)], [("\u2717 miss: IoU 0.10 < 0.5", MISS_COLOUR)],
        [("\u2717 miss: IoU 0.45 < 0.5", MISS_COLOUR)]]
    assert figure.get_suptitle().startswith("run: GAP CAM; hit: the top-1 box has IoU \u2265 0.5")
    figure.canvas.draw()
    title = figure._suptitle.get_window_extent()
    first_row_titles = [axis.title.get_window_extent() for axis in axes[:4]]
    assert all(title.y0 >= box.y1 for box in first_row_titles)  # the title is above the first row's captions
    verdicts = [axis.texts[0].get_window_extent() for axis in axes[:4]]
    second_row_title = axes[4].title.get_window_extent()
    assert all(box.y0 >= second_row_title.y1 for box in verdicts)  # row 1's verdicts clear of row 2's names
    plt.close(figure)


# ----------------------------------------------------------------------------- the learning curves


HISTORY = [
    {"epoch": 1, "loss": 2.0, "accuracy": 30.0, "val_top1_cls_error": 60.0, "val_gt_known_loc_acc": 40.0},
    {"epoch": 2, "loss": 1.0, "accuracy": 60.0, "val_top1_cls_error": 40.0, "val_gt_known_loc_acc": 55.0},
    {"epoch": 3, "loss": 0.5, "accuracy": 90.0, "val_top1_cls_error": 20.0, "val_gt_known_loc_acc": 45.0},
]


def test_learning_curves_mark_the_val_selected_epoch_on_both_panels():
    assert select_epoch(HISTORY) == 2
    figure = history_figure(HISTORY, "run: learning curves", 2, SELECTION_RULE)
    label = "epoch 2, selected on val (best val GT-known loc)"
    assert vertical_lines(figure) == [(0, label, 2.0), (1, label, 2.0)]
    assert [(xs, ys) for _, xs, ys in markers(figure, "*")] == [([2.0], [55.0])]  # on the curve it was chosen on
    legend = [text.get_text() for text in figure.axes[1].get_legend().get_texts()]
    assert legend == ["train accuracy", "val top-1 cls error", "val GT-known loc", label]
    plt.close(figure)
    figure = history_figure(HISTORY, "no validation", None, SELECTION_RULE)
    assert vertical_lines(figure) == [] and markers(figure, "*") == []
    plt.close(figure)


def test_learning_curves_draw_each_loss_term_under_the_total():
    history = [{**row, "loss_ce": row["loss"] - 0.25, "loss_acol_b": 0.25} for row in HISTORY]
    figure = history_figure(history, "acol: learning curves", 2, SELECTION_RULE)
    lines = {line.get_label(): list(line.get_ydata()) for line in figure.axes[0].get_lines()
             if not line.get_label().startswith("epoch ")}  # the selected epoch's vertical line aside
    assert lines == {"total": [2.0, 1.0, 0.5], "cross-entropy": [1.75, 0.75, 0.25],
                     "ACoL: cross-entropy of branch B (erased features)": [0.25, 0.25, 0.25]}
    # The legend names the curves (the selected epoch's line is named in the other panel's legend).
    assert [text.get_text() for text in figure.axes[0].get_legend().get_texts()] == list(lines)
    plt.close(figure)
    figure = history_figure(HISTORY, "cam", None, SELECTION_RULE)
    assert figure.axes[0].get_legend() is None  # one curve: no legend
    plt.close(figure)


# ----------------------------------------------------------------------------- BoxAcc against tau


SUMMARY = {"max_box_acc": {"value": 63.3, "tau": 0.12}, "calibrated": {"tau": 0.1}}


def test_tau_marks_are_the_fixed_the_val_chosen_and_the_oracle_tau():
    marks = tau_marks(SUMMARY, 0.2, "test")
    assert [(mark.tau, mark.label) for mark in marks] == [
        (0.2, "tau = 0.2, fixed (eval.tau): the fixed-tau metrics"),
        (0.1, "tau = 0.1, chosen on val (best val BoxAcc)"),
        (0.12, "tau = 0.12, oracle: best on test (MaxBoxAcc)"),
    ]
    assert [mark.tau for mark in tau_marks({"max_box_acc": {"tau": 0.3}}, 0.25, "val")] == [0.25, 0.3]  # no val tau


def test_sweep_figure_keeps_coinciding_curves_apart_and_marks_every_tau():
    taus = [0.0, 0.1, 0.2, 0.3]
    same = [40.0, 60.0, 50.0, 10.0]
    curves = {"tau": taus, CURVE_COLUMN: same, "box_acc_all_0.3": [80.0, 90, 70, 30], "box_acc_all_0.5": same,
              "box_acc_all_0.7": [5.0, 8, 4, 0], "top1_loc_error": [99.0] * 4, VAL_CURVE_COLUMN: [30.0, 50, 45, 5]}
    figure = sweep_figure(curves, "run: BoxAcc vs tau (test, epoch 3)", tau_marks(SUMMARY, 0.2, "test"))
    axis = figure.axes[0]
    drawn = {line.get_label(): line for line in axis.lines}
    largest, all_05 = drawn[CURVE_STYLES[CURVE_COLUMN][0]], drawn[CURVE_STYLES["box_acc_all_0.5"][0]]
    assert list(largest.get_ydata()) == list(all_05.get_ydata())  # the same numbers, yet both show:
    assert (largest.get_linestyle(), all_05.get_linestyle()) == ("-", "--")  # dashes over a wider solid line
    assert largest.get_linewidth() > all_05.get_linewidth() and largest.get_zorder() < all_05.get_zorder()
    assert largest.get_color() != all_05.get_color()
    assert [line.get_label() for line in axis.lines][:5] == [CURVE_STYLES[key][0] for key in CURVE_STYLES]
    assert "top1_loc_error" not in drawn and not any("loc error" in label for label in drawn)
    assert [(label, x) for _, label, x in vertical_lines(figure)] == [
        (mark.label, mark.tau) for mark in tau_marks(SUMMARY, 0.2, "test")]
    plt.close(figure)


# ----------------------------------------------------------------------------- a run hands its own numbers over


def test_a_run_marks_the_epoch_and_taus_its_files_record(tiny_config, monkeypatch):
    drawn = {}  # file name (with its folder) -> the vertical lines of the figure saved there
    save = run_figures.save_figure

    def recording_save(figure, path, dpi=100):
        drawn[f"{path.parent.name}/{path.name}"] = vertical_lines(figure)
        return save(figure, path, dpi)

    monkeypatch.setattr(run_figures, "save_figure", recording_save)
    config = tiny_config("train.epochs=3", "name=marked")
    run(config, log=lambda message: None)
    folder = config.run_dir
    manifest = json.loads((folder / "manifest.json").read_text())
    selected = manifest["val_selected_epoch"]
    assert selected == select_epoch(read_history(folder / "history.csv")) and selected in (1, 2, 3)
    label = f"epoch {selected}, selected on val (best val GT-known loc)"
    assert drawn["marked/history.png"] == [(0, label, selected), (1, label, selected)]
    for where, metrics_file in (("marked", folder / "metrics.json"),
                                ("val_selected", folder / "val_selected" / "metrics.json")):
        sweep = json.loads(metrics_file.read_text())["sweep"]
        expected = [config.eval.tau, sweep["calibrated"]["tau"], sweep["max_box_acc"]["tau"]]
        if where == "val_selected" and selected == config.train.epochs:
            continue  # the final epoch's files are copied, not drawn again
        assert [x for _, _, x in drawn[f"{where}/boxacc_vs_tau.png"]] == expected, where


# ----------------------------------------------------------------------------- the study's figures


def _study_runs():
    study = StudyConfig(name="marks", base="tiny.yaml", grid=(("model.pooling", ("gap", "gmp")), ("seed", (0, 1))),
                        compare=("gmp",))
    runs = []
    for pooling, seed, epoch, tau, iou in (("gap", 1, 3, 0.15, 0.6), ("gap", 0, 2, 0.1, 0.4),
                                           ("gmp", 0, 1, 0.3, 0.5), ("gmp", 1, 1, 0.35, 0.2)):
        result = hand_made_run(pooling, seed, [1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0],
                               [0.8, 0.6, 0.4, 0.2], [50.0, 75.0])
        history = [{**row, "val_gt_known_loc_acc": row["val_gt_known_loc_acc"] + 10 * seed} for row in HISTORY]
        runs.append(replace(result, history=history, selected_epoch=epoch, gt_class_iou=np.full(4, iou),
                            metrics={**result.metrics, "sweep": {"calibrated": {"tau": tau}}}))
    return study, runs


def _captured(monkeypatch) -> list[plt.Figure]:
    figures = []
    monkeypatch.setattr(study_figures, "save_figure", lambda figure, path, dpi: figures.append(figure) or path)
    return figures


def test_study_learning_curves_star_each_runs_val_selected_epoch(monkeypatch, tmp_path):
    study, runs = _study_runs()
    assert study_figures.selected_epochs(runs[:2]) == [2, 3]  # in seed order
    figures = _captured(monkeypatch)
    study_figures.learning_curves(study, by_setting(study, runs), tmp_path / "learning_curves.png")
    # GAP's mean val GT-known loc: 45, 60, 50 (seeds 0 and 1 are 10 apart); GMP's the same.
    assert markers(figures[0], "*") == [("GAP selected on val: epoch 2, 3", [2.0, 3.0], [60.0, 50.0]),
                                        ("GMP selected on val: epoch 1, 1", [1.0, 1.0], [45.0, 45.0])]
    assert "star: each run's epoch selected on val (best val GT-known loc)" in " ".join(figures[0].get_suptitle().split())
    plt.close("all")


def test_study_boxacc_marks_the_fixed_the_oracle_and_the_val_chosen_taus(monkeypatch, tmp_path):
    study, runs = _study_runs()
    assert study_figures.val_taus(runs[:2]) == [0.1, 0.15]  # in seed order
    figures = _captured(monkeypatch)
    study_figures.boxacc_vs_tau(study, by_setting(study, runs), tmp_path / "boxacc_vs_tau.png")
    # Every hand-made run's curve is (tau 0: 50 %, tau 0.5: 75 %): the oracle is tau 0.5.
    assert markers(figures[0], "*") == [("GAP oracle tau 0.50: best 75.0%", [0.5], [75.0]),
                                        ("GMP oracle tau 0.50: best 75.0%", [0.5], [75.0])]
    assert markers(figures[0], "v") == [("GAP tau chosen on val: 0.1, 0.15", [0.1, 0.15], [55.0, 57.5]),
                                        ("GMP tau chosen on val: 0.3, 0.35", [0.3, 0.35], [65.0, 67.5])]
    assert [(label, x) for _, label, x in vertical_lines(figures[0])] == [("tau = 0.2, fixed (eval.tau)", 0.2)]
    plt.close("all")


def test_study_gallery_marks_each_box_hit_or_miss(monkeypatch, tmp_path):
    study, runs = _study_runs()
    monkeypatch.setattr(study_figures, "_input_images", lambda result, ids: [np.zeros((64, 64, 3), np.uint8)] * len(ids))
    monkeypatch.setattr(study_figures, "upsampled_cams", lambda result, count: np.ones((count, 64, 64), np.float32))
    figures = _captured(monkeypatch)
    study_figures.cams_side_by_side(study, by_setting(study, runs), tmp_path / "cams.png")
    first_row = figures[0].axes[:3]  # the image, then GAP's and GMP's first seed (seed 0: IoU 0.4 and 0.5)
    assert [[(text.get_text(), text.get_color()) for text in axis.texts] for axis in first_row] == [
        [], [("\u2717 miss: IoU 0.40 < 0.5", MISS_COLOUR)], [("\u2713 hit: IoU 0.50 \u2265 0.5", HIT_COLOUR)]]
    assert [axis.get_title() for axis in first_row[1:]] == ["GAP (seed 0)", "GMP (seed 0)"]
    plt.close("all")

