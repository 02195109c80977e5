"""House rules that keep the project importable and its data folders clean."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_inspect_source_root_is_not_a_package() -> None:
    # A package named `inspect` would shadow the standard library's inspect module.
    assert not (ROOT / "inspect" / "__init__.py").exists()


def test_data_folders_hold_no_code() -> None:
    for folder in ("models", "cameras", "calibration"):
        assert not list((ROOT / folder).rglob("*.py")), f"{folder}/ must hold data only"


def test_standard_library_inspect_is_not_shadowed() -> None:
    import inspect

    assert hasattr(inspect, "signature")
