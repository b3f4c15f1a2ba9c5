"""experiments/run_all.py: the one command behind docs/experiments."""

import json

import pytest

from experiments import run_all


def test_run_all_writes_each_experiment(tmp_path, capsys):
    assert run_all.main(["parameter_scaling", "pareto", "--tiny", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("parameter_scaling", "pareto"):
        assert f"== {name}" in out
        with open(tmp_path / f"{name}.json") as f:
            result = json.load(f)
        assert result["figures"] and all((tmp_path / png).is_file() for png in result["figures"])


def test_run_all_rejects_unknown_names(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_all.main(["no_such_experiment", "--out", str(tmp_path)])
    assert "unknown experiment" in capsys.readouterr().err
    assert set(run_all.EXPERIMENTS) == {
        "cascade_identity", "kronecker_expressivity", "parameter_scaling",
        "translation_equivariance", "borders", "pareto"}
