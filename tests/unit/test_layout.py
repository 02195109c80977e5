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


# Which layers each layer of inspect/lineinspect/ may import (docs/architecture.md, "The map").
MAY_IMPORT = {
    "core": {"core", "errors", "yamlfile", "config"},
    "line": {"core", "line", "errors", "yamlfile", "config"},
    "http": {"core", "line", "http", "errors", "config"},
    "offline": {"core", "offline", "errors", "yamlfile", "config"},
    "teach": {"core", "offline", "teach", "errors"},
}


def test_layers_import_only_what_they_build_on() -> None:
    import ast

    package = ROOT / "inspect" / "lineinspect"
    wrong = []
    for layer, allowed in MAY_IMPORT.items():
        for path in (package / layer).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                for name in names:
                    parts = name.split(".")
                    if parts[0] == "lineinspect" and len(parts) > 1 and parts[1] not in allowed | {"__version__"}:
                        wrong.append(f"{path.relative_to(package)} imports {name}")
    assert not wrong, "\n".join(wrong)
