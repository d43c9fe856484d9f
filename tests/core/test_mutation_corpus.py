"""A seeded corpus of mutated scan files: every read succeeds or raises a ReaderError naming the
file. The mutations (byte flips, truncations, zeroed and duplicated runs, header fields set to
odd values) are those of ``benchmarks/robustness.py``, which runs 2,000 of them and the crafted
cases; this runs a few hundred in CI.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from propl.data.readers import MAX_SCAN_BYTES_ENV, ReaderError, read_scan

N_MUTATIONS = 500


@pytest.fixture(scope="module")
def robustness(load_benchmark):
    """benchmarks/robustness.py as a module."""
    return load_benchmark("robustness.py")


def read_outcome(path: Path) -> str | None:
    """None when ``path`` reads or fails cleanly, else what went wrong."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read_scan(path)
    except ReaderError as exc:
        if path.name not in str(exc):
            return f"{path.name}: the error does not name the file: {exc}"
        if "not enough memory" in str(exc):  # read_scan's MemoryError
            return f"{path.name}: ran out of memory: {exc}"
    except Exception as exc:
        return f"{path.name}: {type(exc).__name__}: {exc}"
    return None


@pytest.mark.timeout(300)
def test_every_mutated_file_reads_or_fails_cleanly(robustness, tmp_path, monkeypatch):
    # a small limit: a header mutation that declares a large image is refused, not decoded
    monkeypatch.setenv(MAX_SCAN_BYTES_ENV, str(64 << 20))
    seeds = robustness.seed_files(tmp_path / "seeds")
    kinds = {robustness.kind_of(path) for path in seeds}
    assert {"dicom", "png", "tiff", "jpeg", "bmp"} <= kinds
    for path in seeds:
        read_scan(path)  # the seeds themselves read
    corpus = robustness.mutated_corpus(seeds, N_MUTATIONS, tmp_path / "mutated", seed=0)
    assert len(corpus) == N_MUTATIONS
    assert {mutation for _, mutation, _ in corpus} == set(robustness.MUTATIONS)
    failures = [problem for _, _, path in corpus if (problem := read_outcome(path))]
    assert failures == [], "\n".join(failures)


def test_the_corpus_is_reproducible(robustness, tmp_path):
    seeds = robustness.seed_files(tmp_path / "seeds", videos=False)[:4]
    first = robustness.mutated_corpus(seeds, 12, tmp_path / "a", seed=3)
    again = robustness.mutated_corpus(seeds, 12, tmp_path / "b", seed=3)
    assert [p.read_bytes() for *_, p in first] == [p.read_bytes() for *_, p in again]
    assert any(
        p.read_bytes() != s.read_bytes() for (*_, p), s in zip(first, seeds * 3, strict=True)
    )
