"""`lineinspect teach` without --method: the best method installed, or the one its options belong to, said on stderr."""

from __future__ import annotations

from pathlib import Path

import pytest

from lineinspect import cli
from lineinspect.cli import main
from lineinspect.core.modelcard import load_card
from lineinspect.offline.synthetic import write_sample_set

needs_torch = pytest.mark.skipif(
    not cli.torch_installed(), reason="torch is not installed (pip install 'lineinspect[train]')"
)

AUTO_FEATNET = (
    "--method not given: featnet, the best method installed (torch is there; from good parts alone it learns from "
    "defects painted on them; see README 'Teach methods'); give --method stats for a model in seconds"
)
AUTO_STATS = (
    "--method not given: stats (torch is not installed; featnet does better on most surfaces: "
    "pip install 'lineinspect[train]'; --method patchknn for parts that are not in a fixture)"
)


@pytest.fixture
def good(tmp_path: Path) -> Path:
    write_sample_set(tmp_path / "s", good=8, defective=2, seed=3, width=96, height=64)
    return tmp_path / "s" / "good"


@pytest.fixture
def without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "torch_installed", lambda: False)


def _teach(good: Path, out: Path, *extra: str) -> int:
    return main(["teach", "--good", str(good), "--out", str(out), *extra])


@needs_torch
def test_teach_picks_featnet_when_torch_is_installed_and_says_why(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 60x60 is no size featnet takes: its own refusal shows it was chosen, without minutes of training.
    assert _teach(good, tmp_path / "m", "--size", "60x60") == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == AUTO_FEATNET
    assert "--method featnet needs" in err


def test_teach_picks_stats_without_torch_and_says_what_to_install(
    good: Path, tmp_path: Path, without_torch: None, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m"
    assert _teach(good, out, "--size", "64x48") == 0
    assert str(load_card(out).trained["method"]).startswith("filter-bank statistics")
    printed = capsys.readouterr()
    assert AUTO_STATS in printed.err.splitlines()
    assert "--method not given" not in printed.out  # scripts reading stdout see only the model line
    assert "model 'm' written" in printed.out


@needs_torch
def test_steps_without_method_teach_featnet(good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m"
    assert _teach(good, out, "--size", "64x64", "--steps", "5") == 0
    card = load_card(out)
    assert card.trained["steps"] == 5 and card.trained["supervised"] is False
    assert "--method not given: featnet, the method --steps belongs to" in capsys.readouterr().err.splitlines()


@needs_torch
def test_defects_without_method_select_featnet(good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    defects = good.parent / "defective"
    assert _teach(good, tmp_path / "m", "--defects", str(defects), "--size", "60x60") == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == (
        "--method not given: featnet, the method --defects belongs to (draem takes it too: --method draem)"
    )
    assert "--method featnet needs" in err


def test_defects_without_method_and_without_torch_say_what_to_install(
    good: Path, tmp_path: Path, without_torch: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _teach(good, tmp_path / "m", "--defects", str(good.parent / "defective")) == 2
    assert capsys.readouterr().err == (
        "lineinspect teach: --defects is featnet's, and featnet needs torch, which is not installed: "
        "pip install 'lineinspect[train]' (or leave --defects out: teach then uses stats, from good images alone)\n"
    )
    assert not (tmp_path / "m").exists()


def test_steps_without_method_and_without_torch_say_what_to_install(
    good: Path, tmp_path: Path, without_torch: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _teach(good, tmp_path / "m", "--steps", "5") == 2
    assert (
        "--steps is featnet's, and featnet needs torch, which is not installed: pip install 'lineinspect[train]'"
        in (capsys.readouterr().err)
    )


@needs_torch
def test_epochs_without_method_select_draem(good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _teach(good, tmp_path / "m", "--epochs", "1", "--size", "64x64") == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "--method not given: draem, the method --epochs belongs to"
    assert "--method draem needs at least" in err


@pytest.mark.parametrize("option", [["--position-weight", "0.5"], ["--ignore-border", "0"]])
def test_patchknn_options_without_method_teach_patchknn(
    option: list[str], good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m"
    assert _teach(good, out, "--size", "64x48", *option) == 0
    assert str(load_card(out).trained["method"]).startswith("patch nearest neighbour")
    assert f"--method not given: patchknn, the method {option[0]} belongs to" in capsys.readouterr().err.splitlines()


def test_options_of_two_methods_without_method_are_refused(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _teach(good, tmp_path / "m", "--steps", "5", "--position-weight", "2") == 2
    assert capsys.readouterr().err == (
        "lineinspect teach: --steps is featnet's; --position-weight is patchknn's: "
        "give --method with the one you mean (featnet, patchknn)\n"
    )


def test_an_explicit_method_is_taught_without_a_note(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _teach(good, tmp_path / "m", "--size", "64x48", "--method", "stats") == 0
    assert "--method not given" not in capsys.readouterr().err


@needs_torch
def test_threads_without_method_teach_featnet_on_that_many_threads(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m"
    assert _teach(good, out, "--size", "64x64", "--steps", "2", "--threads", "1") == 0
    assert load_card(out).trained["threads"] == 1
    assert "--method not given: featnet, the method --steps and --threads belong to" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "stats", "--threads", "1"], "--threads: the stats method trains no network and takes seconds"),
        (["--method", "patchknn", "--threads", "2"], "--threads: the patchknn method trains no network"),
        (["--method", "featnet", "--threads", "0"], "--threads 0: train on at least 1 CPU thread"),
        (["--method", "draem", "--threads", "-1"], "--threads -1: train on at least 1 CPU thread"),
    ],
)
def test_threads_are_refused_where_they_mean_nothing(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert _teach(good, tmp_path / "m", "--size", "64x48", *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
