"""`lineinspect check`: inspect image files offline and report a verdict per image.

Files that cannot be read or decoded are reported as failed lines and count
as `undecided` (as an unreadable part would on the line). The report is one
row per image plus a summary, as JSON or CSV.
"""

from __future__ import annotations

import csv
import glob
import json
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lineinspect.core.decode import read_image_file
from lineinspect.core.frame import Frame
from lineinspect.core.inspector import Inspector, with_decode_time
from lineinspect.core.result import Result, Verdict
from lineinspect.errors import ImageError, LineinspectError

# Suffixes picked up when a folder is given; files named explicitly are tried whatever their suffix.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
REPORT_FORMATS = (".json", ".csv")
CSV_COLUMNS = ["path", "verdict", "score", "defect_count", "defects", "reason", "recipe", "model", "total_ms"]
# Images decoded ahead of the one being inspected (bounds memory for large images).
DECODE_AHEAD = 2
_GLOB_CHARS = frozenset("*?[")


class CheckUsageError(LineinspectError):
    """The command line names no usable images or report (exit status 2)."""


@dataclass(frozen=True, slots=True)
class CheckRow:
    """One image's outcome. `error` is set when the file could not be read or decoded."""

    path: str
    verdict: Verdict
    score: float | None
    reason: str
    defects: list[dict[str, Any]] = field(default_factory=list)
    recipe_id: str | None = None
    model_id: str | None = None
    total_ms: float | None = None
    error: str | None = None

    @classmethod
    def from_result(cls, path: str, result: Result) -> CheckRow:
        payload = result.to_payload()
        defects = [
            {k: d[k] for k in ("class", "score", "counts", "box_px", "area_px", "length_px", "area_mm2", "length_mm")}
            for d in payload["defects"]
        ]
        return cls(
            path=path,
            verdict=result.verdict,
            score=payload["score"],
            reason=result.reason,
            defects=defects,
            recipe_id=result.recipe_id,
            model_id=result.model_id,
            total_ms=payload["timings_ms"].get("total"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "verdict": self.verdict.value,
            "score": self.score,
            "reason": self.reason,
            "defect_count": sum(1 for d in self.defects if d["counts"]),
            "defects": self.defects,
            "recipe": self.recipe_id,
            "model": self.model_id,
            "total_ms": self.total_ms,
            "error": self.error,
        }

    def to_csv_row(self) -> dict[str, Any]:
        described = "; ".join(
            f"{d['class']} {d['score']:.3f} [{', '.join(f'{v:g}' for v in d['box_px'])}]"
            + ("" if d["counts"] else " (within limits)")
            for d in self.defects
        )
        return {
            "path": self.path,
            "verdict": self.verdict.value,
            "score": "" if self.score is None else self.score,
            "defect_count": sum(1 for d in self.defects if d["counts"]),
            "defects": described,
            "reason": self.reason,
            "recipe": self.recipe_id or "",
            "model": self.model_id or "",
            "total_ms": "" if self.total_ms is None else self.total_ms,
        }


@dataclass(frozen=True, slots=True)
class CheckSummary:
    images: int
    by_verdict: dict[str, int]
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def all_passed(self) -> bool:
        return self.by_verdict.get(Verdict.PASS.value, 0) == self.images

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "by_verdict": dict(self.by_verdict),
            "seconds": round(self.seconds, 3),
            "images_per_s": round(self.images_per_s, 2),
        }

    def line(self) -> str:
        counts = ", ".join(f"{self.by_verdict[v.value]} {v.value}" for v in Verdict)
        noun = "image" if self.images == 1 else "images"
        return f"checked {self.images} {noun} in {self.seconds:.2f} s ({self.images_per_s:.1f} images/s): {counts}"


@dataclass(frozen=True, slots=True)
class CheckReport:
    rows: list[CheckRow]
    summary: CheckSummary

    @property
    def exit_status(self) -> int:
        """0 when every image passed, 1 when any failed or is undecided."""
        return 0 if self.summary.all_passed else 1


def collect_images(arguments: Sequence[str]) -> list[Path]:
    """Files, folders (searched recursively for image suffixes) and glob patterns → image paths.

    Patterns are expanded here too (`**` works), so quoting them is fine.
    Each argument must yield at least one file; duplicates are dropped, order kept.
    """
    found: dict[Path, None] = {}
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
                raise CheckUsageError(f"{argument}: the folder holds no images ({suffixes})")
        elif path.is_file():
            images = [path]
        elif _GLOB_CHARS & set(argument):
            images = sorted(Path(p) for p in glob.glob(argument, recursive=True) if Path(p).is_file())
            if not images:
                raise CheckUsageError(f"{argument}: the pattern matches no files")
        else:
            raise CheckUsageError(f"{argument}: no such file or folder")
        for image in images:
            found.setdefault(image, None)
    return list(found)


def check_report_path(report: Path | None) -> None:
    """Refuse a report file lineinspect cannot write, before any image is inspected."""
    if report is None:
        return
    if report.suffix.lower() not in REPORT_FORMATS:
        raise CheckUsageError(f"--report {report}: the file name must end in .json or .csv")
    if not report.parent.is_dir():
        raise CheckUsageError(f"--report {report}: the folder {report.parent} does not exist")


def check_images(
    inspector: Inspector,
    paths: Sequence[Path],
    *,
    recipe_id: str | None = None,
    max_pixels: int = 40_000_000,
    on_row: Callable[[CheckRow], None] | None = None,
) -> CheckReport:
    """Inspect each image with `recipe_id` (default: the Inspector's default recipe).

    Files are decoded one or two ahead in a reader thread while the current
    one is inspected. `on_row` is called after each image (progress, lines).
    """
    inspector.recipe(recipe_id)  # an unknown recipe is a usage error, before any work
    rows: list[CheckRow] = []
    counts = {v.value: 0 for v in Verdict}
    t0 = time.monotonic_ns()
    for path, decoded in _decode_ahead(paths, max_pixels):
        if isinstance(decoded, ImageError):
            message = str(decoded)
            row = CheckRow(path=str(path), verdict=Verdict.UNDECIDED, score=None, reason=message, error=message)
        else:
            image, decode_ms = decoded
            frame = Frame(image=image, source=str(path))
            result = inspector.inspect(frame, recipe_id)  # a failure is an undecided row, never a stopped batch
            row = CheckRow.from_result(str(path), with_decode_time(result, decode_ms))
        rows.append(row)
        counts[row.verdict.value] += 1
        if on_row is not None:
            on_row(row)
    seconds = (time.monotonic_ns() - t0) / 1e9
    return CheckReport(rows, CheckSummary(len(rows), counts, seconds))


def _decode_ahead(
    paths: Sequence[Path], max_pixels: int
) -> Iterator[tuple[Path, tuple[np.ndarray, float] | ImageError]]:
    def decode(path: Path) -> tuple[np.ndarray, float] | ImageError:
        t0 = time.monotonic_ns()
        try:
            image = read_image_file(str(path), max_pixels=max_pixels)
        except ImageError as exc:
            return exc
        except Exception as exc:  # a decoder bug on one odd file must not stop the batch
            return ImageError("corrupt", f"{path}: cannot be decoded: {type(exc).__name__}: {exc}")
        return image, (time.monotonic_ns() - t0) / 1e6

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lineinspect-check-decode") as reader:
        pending: deque[tuple[Path, Future[tuple[np.ndarray, float] | ImageError]]] = deque()
        upcoming = iter(paths)
        try:
            for path in upcoming:
                pending.append((path, reader.submit(decode, path)))
                if len(pending) > DECODE_AHEAD:
                    done_path, future = pending.popleft()
                    yield done_path, future.result()
            while pending:
                done_path, future = pending.popleft()
                yield done_path, future.result()
        finally:
            for _, future in pending:
                future.cancel()


def write_report(report: CheckReport, path: Path) -> None:
    """JSON: `{"summary": {...}, "rows": [...]}`; CSV: one row per image (summary not included)."""
    check_report_path(path)
    if path.suffix.lower() == ".json":
        document = {"summary": report.summary.to_dict(), "rows": [r.to_dict() for r in report.rows]}
        path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in report.rows:
            writer.writerow(row.to_csv_row())
