"""``make perf``'s pure parts (bench.commands.perf): the candidate paths, alternation, medians, auto's verdict.

Hand-made timings only: nothing here times real work, so nothing depends on the machine's speed or load.
"""

import pytest
from helpers import REPO

from bench.commands.perf import (
    NOISE,
    TrainingPath,
    alternated_seconds,
    auto_path,
    auto_verdict,
    compile_seconds,
    median_rates,
    median_timings,
    run_seconds,
    training_paths,
)
from bench.config import load_config

GAP = REPO / "configs" / "gap.yaml"


def test_candidates_are_both_precisions_with_the_recipe_then_the_compiled_ones():
    config = load_config(GAP)  # channels_last, 3 frozen stages
    candidates, reference = training_paths(config, ["fp32"])
    assert [path.name for path in candidates] == [
        "fp32, channels_last, 3 frozen",
        "bf16, channels_last, 3 frozen",
        "fp32, channels_last, 3 frozen, torch.compile",
    ]
    assert reference == TrainingPath("fp32", channels_last=False, frozen_stages=0)
    assert reference.name == "fp32, contiguous, 0 frozen"
    assert [path.compiled for path in training_paths(config, [])[0]] == [False, False]
    both, _ = training_paths(config, ["fp32", "bf16"])
    assert [path.precision for path in both if path.compiled] == ["fp32", "bf16"]


def test_auto_is_the_fp32_candidate_on_cpu_and_an_explicit_precision_is_kept():
    config = load_config(GAP)
    candidates, _ = training_paths(config, [])
    assert auto_path(config) == candidates[0]  # precision auto -> fp32 on every CPU
    bf16 = load_config(GAP, ["precision=bf16", "train.frozen_stages=5", "channels_last=false"])
    assert auto_path(bf16) == TrainingPath("bf16", channels_last=False, frozen_stages=5)
    assert auto_path(bf16) in training_paths(bf16, [])[0]


def test_steps_alternate_round_by_round_and_each_gets_its_own_seconds():
    order = []
    ticks = iter([0.0, 1.0, 1.0, 3.0, 3.0, 3.5, 3.5, 6.5])  # a clock read before and after each step

    def step(name):
        return lambda: order.append(name)

    seconds = alternated_seconds({"a": step("a"), "b": step("b")}, repeats=2, clock=lambda: next(ticks))
    assert order == ["a", "b", "a", "b"]
    assert seconds == {"a": [1.0, 0.5], "b": [2.0, 3.0]}


def test_rates_are_images_over_the_median_step():
    # Odd count: the middle value (2 s); even count: the mean of the two middle ones ((1 + 3) / 2 = 2 s).
    rates = median_rates({"odd": [4.0, 1.0, 2.0], "even": [1.0, 3.0], "spike": [1.0, 1.0, 60.0]}, images=32)
    assert rates == {"odd": 16.0, "even": 16.0, "spike": 32.0}  # a single slow step (load spike) does not count


def test_run_time_adds_the_one_off_compile_to_the_steps():
    assert run_seconds(20.0, 12000) == 600.0
    assert run_seconds(24.0, 12000, compile_seconds=90.0) == 590.0


def test_compile_time_is_each_first_call_less_a_step_of_its_size():
    # First step at 32 took 100 s, the first at 28 (an epoch's last batch) 50 s; a compiled step at 32 takes 2 s.
    assert compile_seconds({32: 100.0, 28: 50.0}, step_seconds=2.0, batch_size=32) == 98.0 + (50.0 - 1.75)
    assert compile_seconds({32: 2.0}, step_seconds=2.0, batch_size=32) == 0.0


def test_verdict_names_the_fastest_when_auto_is_not_it():
    runs = {"fp32": 600.0, "bf16": 700.0, "fp32 compiled": 500.0}
    assert auto_verdict(runs, "fp32 compiled") == "auto picks fp32 compiled: the fastest here"
    verdict = auto_verdict(runs, "fp32")
    assert verdict.startswith("auto picks fp32: NOT the fastest here; fp32 compiled is 1.20x faster")
    assert "noise" not in verdict
    tie = auto_verdict({"fp32": 100.0, "bf16": 102.0, "fp32 compiled": 130.0}, "fp32")
    assert tie == "auto picks fp32: the fastest here, but bf16 is within 2%, inside the 5% noise of a shared machine"
    close = auto_verdict({"fp32": 102.0, "bf16": 100.0}, "fp32")  # 2 % apart: says so, and that it is noise-level
    assert "NOT the fastest" in close and "1.02x" in close and f"{NOISE:.0%} noise" in close


def test_method_timings_are_medians_over_repeats_with_their_range():
    repeats = [{"forward": {"ms_per_image": 10.0, "overhead": 1.0}, "cam": {"ms_per_image": 11.0, "overhead": 1.1}},
               {"forward": {"ms_per_image": 20.0, "overhead": 1.0}, "cam": {"ms_per_image": 16.0, "overhead": 0.8}},
               {"forward": {"ms_per_image": 12.0, "overhead": 1.0}, "cam": {"ms_per_image": 12.0, "overhead": 1.0}}]
    timings = median_timings(repeats)
    assert list(timings) == ["forward", "cam"]
    assert timings["forward"] == {"ms_per_image": 12.0, "overhead": 1.0, "lowest": 1.0, "highest": 1.0}
    assert timings["cam"] == {"ms_per_image": 12.0, "overhead": 1.0, "lowest": 0.8, "highest": 1.1}


@pytest.mark.parametrize("compiled", [False, True])
def test_path_names_are_distinct(compiled):
    config = load_config(GAP)
    candidates, reference = training_paths(config, ["fp32", "bf16"])
    names = [path.name for path in [*candidates, reference]]
    assert len(set(names)) == len(names) == 5
    assert (", torch.compile" in TrainingPath("fp32", True, 3, compiled=compiled).name) is compiled


def test_wsol_method_timing_prints_each_method_against_cam(tiny_config, capsys):
    from bench.commands.perf import wsol_method_costs

    config = tiny_config()
    wsol_method_costs("configs/tiny.yaml", 1, 1, ["has", "cutmix", "adl"], str(config.data_root))
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["cam", "has", "cutmix", "adl"]
    assert lines[1].endswith("1.00x cam")
