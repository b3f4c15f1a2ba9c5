"""Tests of experiments/pareto.py: the Pareto front against a brute-force dominance
check, and a tiny run (manifest numbers only, no latency) into a temporary folder."""

import json
import os
import re

import numpy as np
import pytest

from experiments import pareto

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MANIFEST = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "kronecker_zoo", "weights", "manifest.json")


def brute_force_front(cost, value):
    """Indices of points no other point dominates (O(n^2), straight from the definition)."""
    n = len(cost)
    keep = []
    for i in range(n):
        dominated = any(
            cost[j] <= cost[i] and value[j] >= value[i]
            and (cost[j] < cost[i] or value[j] > value[i])
            for j in range(n) if j != i)
        if not dominated:
            keep.append(i)
    return sorted(keep)


@pytest.mark.parametrize("seed", range(40))
def test_pareto_front_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    if seed % 2:  # few distinct values: many ties in cost, in value and whole duplicates
        cost = rng.integers(0, 5, n).astype(float)
        value = rng.integers(0, 4, n).astype(float)
    else:
        cost, value = rng.lognormal(size=n), rng.normal(size=n)
    front = pareto.pareto_front(cost, value)
    assert sorted(front.tolist()) == brute_force_front(cost, value)
    # sorted by cost, and the value strictly increases along the front except for duplicates
    assert np.all(np.diff(cost[front]) >= 0)
    assert np.all(np.diff(value[front]) >= 0)


def test_pareto_front_edge_cases():
    assert pareto.pareto_front([], []).tolist() == []
    assert pareto.pareto_front([3.0], [1.0]).tolist() == [0]
    assert pareto.pareto_front([1, 1, 1], [2, 2, 2]).tolist() == [0, 1, 2]   # duplicates stay
    assert pareto.pareto_front([1, 1], [2, 3]).tolist() == [1]                 # same cost
    assert pareto.pareto_front([1, 2], [3, 3]).tolist() == [0]                 # same value
    with pytest.raises(ValueError, match="same length"):
        pareto.pareto_front([1, 2], [1])
    with pytest.raises(ValueError, match="finite"):
        pareto.pareto_front([1, np.nan], [1, 2])


def test_gap_to_front_is_zero_on_the_front():
    rng = np.random.default_rng(0)
    cost, value = rng.integers(0, 6, 30).astype(float), rng.normal(size=30)
    gap = pareto.gap_to_front(cost, value)
    front = set(pareto.pareto_front(cost, value).tolist())
    assert np.all(gap >= 0)
    assert all(gap[i] == 0 for i in front)
    assert all(gap[i] > 0 for i in range(30) if i not in front and not any(
        cost[j] <= cost[i] and value[j] == value[i] for j in front))


def test_tiny_run_writes_json_and_pngs_matching_the_manifest(tmp_path):
    result = pareto.run(str(tmp_path), tiny=True)
    with open(tmp_path / "pareto.json", encoding="utf-8") as f:
        written = json.load(f)
    assert written == json.loads(json.dumps(result))
    assert written["figures"] == ["pareto.png", "pareto_vs_twin.png"]
    for name in written["figures"]:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 10_000
    assert written["claim"] and written["finding"]
    student = written["points"][3]
    assert student["family"] == "kron_student" and student["name"] in written["finding"]
    verdict = "target met" if pareto.meets_target(student) else "target not met"
    assert re.search(re.escape(student["name"]) + r" \([^)]*\): [^;]*; on front\(s\): [^;]*"
                     r"(; vs [^;]*)?; " + verdict + r"(;|\.$)", written["finding"])
    assert written["latency"] == {"measured": False}

    with open(MANIFEST, encoding="utf-8") as f:
        manifest = json.load(f)
    points = {p["name"]: p for p in written["points"]}
    assert set(points) == {"resnet_8", "kron_resnet_8", "lowrank_resnet_8", "resnet_8_kron5x"}
    for name, p in points.items():
        entry = manifest[name]["fashion_mnist"]
        twin = manifest[p["dense_twin"]]["fashion_mnist"]
        assert p["dense_twin"] == "resnet_8"
        assert (p["params"], p["macs"], p["test_accuracy"], p["epochs"]) == (
            entry["params"], entry["macs"], entry["test_accuracy"], entry["epochs"])
        assert p["compression_vs_twin"] == pytest.approx(twin["params"] / entry["params"],
                                                         abs=1e-4)
        assert p["accuracy_change_points"] == pytest.approx(
            100 * (entry["test_accuracy"] - twin["test_accuracy"]), abs=1e-4)
        assert p["latency_ms"] is None

    # fronts recomputed by brute force from the manifest numbers
    names = sorted(points)
    acc = [manifest[n]["fashion_mnist"]["test_accuracy"] for n in names]
    for key in ("params", "macs"):
        cost = [manifest[n]["fashion_mnist"][key] for n in names]
        expected = {names[i] for i in brute_force_front(cost, acc)}
        assert set(written["fronts"][key]) == expected
    assert "latency_ms" not in written["fronts"]

