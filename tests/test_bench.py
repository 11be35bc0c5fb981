"""The benchmark suite's smoke test: every benchmark behind the docs' tables runs at `--preset tiny` and
prints its table, so that none rots between the runs that make the figures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import BY_NAME, SUITE, arguments, main

ROOT = Path(__file__).resolve().parents[1]


def test_the_harness_lists_the_suite_and_expands_the_tiny_preset(capsys):
    assert main([]) == 0
    listing = capsys.readouterr().out
    assert all(b.name in listing and b.table in listing for b in SUITE)
    assert main(["nosuch"]) == 2 and "no benchmark 'nosuch': use one of training" in capsys.readouterr().err
    training = BY_NAME["training"]
    assert arguments(training, ["--preset", "tiny", "--iters", "2"]) == [*training.tiny, "--iters", "2"]
    assert arguments(training, ["--preset", "fast"]) == ["--preset", "fast"]


@pytest.mark.parametrize("name", [b.name for b in SUITE])
def test_each_benchmark_runs_at_the_tiny_preset(name, tmp_path):
    bench = BY_NAME[name]
    if bench.needs:
        from tests.editor_e2e import editor_skip_reason

        reason = editor_skip_reason(bench.needs)
        if reason is not None:
            pytest.skip(reason)
    command = [sys.executable, "-m", "bench", name, "--preset", "tiny"]
    if bench.out:
        command += ["--out", str(tmp_path / "out")]
    env = {**os.environ, "ENGINE_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line.strip() for line in proc.stdout.splitlines()]
    assert any(line.startswith(bench.expect.strip()) for line in lines), proc.stdout[-3000:]


def test_the_set_generator_benchmark_holds_out_every_fourth_emoji_and_round_drops_other_subjects(tmp_path):
    from bench.bench_sagan import split_set
    from bench.emoji import INSTALL, NOT_ROUND, available

    if not available():
        pytest.fail(f"the emoji font or fontTools is missing: {INSTALL}, and pip install fonttools")
    for emoji, sizes, others in (("faces", (96, 32), 36), ("round", (69, 23), 0)):
        train_dir, trained, held = split_set(tmp_path / emoji, emoji)
        every = sorted((tmp_path / emoji / "all").iterdir())  # u1F600.png ...: code point order
        assert (len(trained), len(held)) == sizes and held == every[3::4]
        assert sorted(p.name for p in train_dir.iterdir()) == sorted(p.name for p in every if p not in held)
        assert sum(int(p.stem[1:], 16) in NOT_ROUND for p in every) == others
