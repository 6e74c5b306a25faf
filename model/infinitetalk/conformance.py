"""``livedub conformance DIR``: run the InfiniteTalk conformance fixture sets found in DIR.

A set is a folder with any of ``dit/``, ``encoders/``, ``pipeline/`` (layout in
conformance/README.md); DIR may be a set or hold several. Everything (sizes, configs, seeds, steps,
guidance, bucket table, colour strength...) is read from the set's own config.json files. One line per
case: ``name  max_abs=...  tol=...  OK|FAIL``; the run fails if any case exceeds its tolerance.
Tolerances are the fixture README's (max abs difference, fp32).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

PARTS = ("dit", "encoders", "pipeline")
PrepareDit = Callable[[torch.nn.Module], object]  # e.g. shards the freshly loaded DiT over the ranks


@dataclasses.dataclass
class Case:
    name: str
    max_abs: float | None
    tol: float
    ok: bool
    note: str = ""

    def line(self) -> str:
        value = "n/a" if self.max_abs is None else f"{self.max_abs:.3e}"
        note = f"  ({self.note})" if self.note else ""
        return f"{self.name}  max_abs={value}  tol={self.tol:g}  {'OK' if self.ok else 'FAIL'}{note}"


class Report:
    """Collects the cases and prints each as it is decided."""

    def __init__(self, write: Callable[[str], None] = print) -> None:
        self.write = write
        self.cases: list[Case] = []

    def add(self, case: Case) -> Case:
        self.cases.append(case)
        self.write(case.line())
        return case

    def compare(self, name: str, got, expected, tol: float, note: str = "") -> Case:
        got = torch.as_tensor(got).detach().double().cpu()
        expected = torch.as_tensor(expected).detach().double().cpu()
        if got.shape != expected.shape:
            return self.add(Case(name, None, tol, False, f"shape {tuple(got.shape)} != {tuple(expected.shape)}"))
        diff = (got - expected).abs().max().item() if got.numel() else 0.0
        return self.add(Case(name, diff, tol, diff <= tol, note))

    def check(self, name: str, ok: bool, note: str) -> Case:
        """An exact bookkeeping check (counts, indices, ranges)."""
        return self.add(Case(name, 0.0 if ok else None, 0.0, ok, note))

    def error(self, name: str, exc: BaseException) -> Case:
        return self.add(Case(name, None, 0.0, False, f"error: {type(exc).__name__}: {exc}"))

    @property
    def failures(self) -> list[Case]:
        return [c for c in self.cases if not c.ok]


def read_json(path: Path) -> dict:
    with open(path) as handle:
        return json.load(handle)


def file_reference(part_dir: Path, text: str) -> Path:
    """A config's file field such as ``"vae.safetensors (official keys)"`` -> the path it names."""
    return (part_dir / text.split()[0]).resolve()


def find_sets(root: Path) -> list[Path]:
    root = Path(root)
    if any((root / part).is_dir() for part in PARTS):
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and any((p / part).is_dir() for part in PARTS))


def run_set(set_dir: Path, report: Report, prepare_dit: PrepareDit | None = None,
            parts: tuple[str, ...] = PARTS) -> None:
    from model.infinitetalk import conformance_dit, conformance_encoders, conformance_pipeline

    runners = {"dit": conformance_dit.run, "encoders": conformance_encoders.run, "pipeline": conformance_pipeline.run}
    for part in parts:
        part_dir = set_dir / part
        label = f"{set_dir.name}/{part}"
        if not (part_dir / "config.json").is_file():
            report.write(f"{label}  skipped (no {part}/config.json in this set)")
            continue
        try:
            with torch.no_grad():
                if part == "encoders":
                    runners[part](part_dir, label, report)
                else:
                    runners[part](part_dir, label, report, prepare_dit)
        except Exception as exc:  # one broken part must not hide the others' results
            report.error(label, exc)
            traceback.print_exc(file=sys.stderr)


def run(root: str | Path, write: Callable[[str], None] = print, prepare_dit: PrepareDit | None = None,
        parts: tuple[str, ...] = PARTS) -> Report:
    root = Path(root)
    report = Report(write)
    sets = find_sets(root) if root.is_dir() else []
    if not sets:
        from model.errors import InputError

        raise InputError(f"no conformance fixture set in {root}: expected a folder with dit/, encoders/ or "
                         "pipeline/ (or folders of such sets)")
    for set_dir in sets:
        run_set(set_dir, report, prepare_dit, parts)
    failed = len(report.failures)
    write(f"conformance: {len(report.cases)} cases in {len(sets)} set(s), {failed} failed")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.infinitetalk.conformance")
    parser.add_argument("folder")
    args = parser.parse_args(argv)
    return 1 if run(args.folder).failures else 0


if __name__ == "__main__":
    sys.exit(main())
