"""metrics.jsonl made to fit the step a run starts from: later rows dropped, a torn line removed, atomically,
with the log's permissions; read back strictly by the trainers, leniently by the curves."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from wgrpo.engine import InputError
from wgrpo.rl.train.metrics_log import MetricsLog, prepare, read_rows


def rows(*steps, **extra):
    return "".join(json.dumps({"step": s, "loss": s / 10, **extra}) + "\n" for s in steps)


def test_rows_from_the_first_step_on_and_a_torn_line_are_dropped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(rows(0, 1, 2, 3, 4) + '{"step": 5, "lo')  # killed while writing step 5
    with MetricsLog(path, first_step=3) as log:
        assert (log.repair.dropped_rows, log.repair.torn_line) == (2, True)
        assert "dropped 2 rows of steps >= 3" in log.note and "torn" in log.note
        log.append({"step": 3, "loss": 0.25})
    assert [r["step"] for r in read_rows(path)] == [0, 1, 2, 3]
    assert path.read_text().endswith('"loss": 0.25}\n')
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temp file left


def test_a_fresh_run_starts_a_fresh_log(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(rows(0, 1, 2))
    assert prepare(path, first_step=0).dropped_rows == 3
    assert path.read_text() == ""


def test_a_log_that_fits_is_left_as_it_is(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(rows(0, 1, 2))
    inode = path.stat().st_ino
    repair = prepare(path, first_step=3)
    assert (repair.dropped_rows, repair.torn_line) == (0, False)
    assert path.stat().st_ino == inode  # not rewritten
    assert prepare(tmp_path / "none.jsonl", first_step=3).dropped_rows == 0  # no log yet


def test_a_last_row_without_its_newline_is_kept(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(rows(0, 1).rstrip("\n"))
    assert prepare(path, first_step=2).torn_line is False
    with MetricsLog(path, first_step=2) as log:
        log.append({"step": 2})
    assert [r["step"] for r in read_rows(path)] == [0, 1, 2]


def test_a_bad_line_inside_the_log_is_named(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(rows(0) + "not json\n" + rows(2))
    with pytest.raises(InputError, match=r"metrics\.jsonl:2: not a metrics row"):
        prepare(path, first_step=1)
    path.write_text(rows(0) + '{"loss": 1}\n')  # a complete line without a step is not torn
    with pytest.raises(InputError, match=r"metrics\.jsonl:2"):
        read_rows(path)


def test_a_rewritten_log_keeps_its_permissions(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(rows(0, 1, 2))
    path.chmod(0o640)
    prepare(path, first_step=1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # not mkstemp's 0o600


def test_temp_files_of_a_killed_rewrite_are_removed_when_a_run_opens_the_log(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(rows(0, 1))
    (tmp_path / ".metrics.jsonl.tmp-k1lled").write_text(rows(0))  # killed before its rename
    (tmp_path / ".curves.png.tmp-k1lled").write_text("not the log's")
    with MetricsLog(path, first_step=2) as log:
        assert log.repair.removed_temp_files == 1
        assert "removed 1 temp files of an interrupted rewrite" in log.note
    assert sorted(p.name for p in tmp_path.iterdir()) == [".curves.png.tmp-k1lled", "metrics.jsonl"]
    assert path.read_text() == rows(0, 1)


def test_a_lenient_reader_skips_every_bad_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(rows(0) + "not json\n" + '{"loss": 1}\n' + "[1, 2]\n\n" + rows(1) + '{"step": 2, "lo')
    assert [r["step"] for r in read_rows(path, strict=False)] == [0, 1]
    with pytest.raises(InputError, match=r"metrics\.jsonl:2"):
        read_rows(path)  # strict by default
    assert read_rows(tmp_path / "none.jsonl", strict=False) == []


def test_the_curves_read_a_log_without_loading_the_engine(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(rows(0, 1) + "not json\n")
    code = ("import sys\n"
            "from wgrpo.rl.train.plot import read_metrics\n"
            f"assert [r['step'] for r in read_metrics({str(path)!r})] == [0, 1]\n"
            "bad = [m for m in sys.modules if m.split('.')[0] == 'wgpu' or m.startswith('wgrpo.engine')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[3])
