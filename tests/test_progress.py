"""bench.progress: one switch hides every later bar of the process (tqdm's TQDM_DISABLE cannot, once imported)."""

import pytest

from bench.progress import progress_bar, show_progress


@pytest.fixture
def restore_progress():
    yield
    show_progress(True)


def test_hidden_bars_stay_hidden_even_when_asked_for(restore_progress, capsys):
    show_progress(False)
    bar = progress_bar(range(3), disable=False)
    assert bar.disable and list(bar) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_shown_bars_follow_the_caller(restore_progress, capsys):
    show_progress(True)
    assert progress_bar(range(3), disable=True).disable
    assert not progress_bar(range(3), disable=False).disable
    list(progress_bar(range(3), desc="counting", disable=False))
    assert "counting" in capsys.readouterr().err

