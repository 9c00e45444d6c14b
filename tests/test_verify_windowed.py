"""Windowed verify: the grid tiles the volume, a border of the receptive field gives the
whole-volume result exactly, the streamed metrics are the whole comparison's, the window is
sized from measured costs, and both frameworks run the same windows."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

from conftest import EXAMPLE
from tf2pt.errors import InputError
from tf2pt.verify import windowed as win

cmp = importlib.import_module("tf2pt.verify.compare")  # the package exports compare(), the function

CROP = ["--crop", "40", "40", "40"]


@pytest.mark.parametrize("dim", [1, 7, 40, 97, 232])
@pytest.mark.parametrize("window,border", [(8, 0), (16, 4), (24, 11), (64, 8), (300, 43)])
def test_the_cores_tile_the_axis_and_keep_their_border(dim, window, border):
    parts = win.axis_windows(dim, window, border)
    cores = [c for _, c in parts]
    assert cores[0][0] == 0 and cores[-1][1] == dim
    assert all(a[1] == b[0] for a, b in zip(cores, cores[1:])), "cores leave no gap and do not overlap"
    for (w0, w1), (c0, c1) in parts:
        assert w1 - w0 == min(window, dim) and 0 <= w0 <= c0 < c1 <= w1 <= dim
        assert w0 == 0 or c0 - w0 >= border, "a core next to another window keeps its border"
        assert w1 == dim or w1 - c1 >= border


def test_a_window_without_room_for_a_core_is_refused():
    with pytest.raises(InputError, match="no core inside a border of 8"):
        win.axis_windows(100, 16, 8)


def _network(x: np.ndarray, layers: int) -> np.ndarray:
    """A stand-in network of known receptive field (``layers`` voxels per side): 3x3x3 sums with
    zero padding at its own input's faces, a bias and a nonlinearity after each."""
    for i in range(layers):
        p = np.pad(x, 1)
        y = np.zeros_like(x)
        for dz in range(3):
            for dy in range(3):
                for dx in range(3):
                    y += p[dz:dz + x.shape[0], dy:dy + x.shape[1], dx:dx + x.shape[2]]
        x = np.tanh(y / 27 + 0.1 * (i + 1))
    return x


def _windowed(x, window, border, layers):
    out = np.full(x.shape, np.nan)
    for w in win.plan_grid(x.shape, window, border):
        y = _network(x[w.input_slices()], layers)
        out[w.core_slices()] = y[w.core_in_window()]
    return out


def test_a_border_of_the_receptive_field_gives_the_whole_volume_exactly():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(23, 30, 17))
    whole = _network(x, 3)
    assert np.array_equal(_windowed(x, [12, 12, 12], 3, 3), whole)
    short = _windowed(x, [12, 12, 12], 2, 3)
    assert not np.isnan(short).any() and not np.array_equal(short, whole), "a border under it changes seams"


def test_streamed_metrics_are_the_whole_comparisons():
    rng = np.random.default_rng(1)
    tf_out = rng.normal(size=(5, 12, 10, 9)).astype(np.float32)
    tf_out[:, :4] *= 0.01  # the first window sees a much smaller scale than the whole output
    pt_out = (tf_out + rng.normal(scale=1e-4, size=tf_out.shape)).astype(np.float32)
    pt_out[2, 7, 3, 4] = tf_out[:, 7, 3, 4].max() + 1  # one label differs
    whole = cmp.compare(tf_out, pt_out)
    acc = cmp.StreamingComparison(tf_out.shape[1:], tf_out.shape[0])
    for w in win.plan_grid(tf_out.shape[1:], [4, 6, 9], 1):
        s = (slice(None),) + w.core_slices()
        acc.add(tf_out[s], pt_out[s], w.core_slices())
    streamed = acc.finish()
    assert streamed.metrics["argmax_agreement"] < 1
    for key, value in whole.metrics.items():
        if key == "label_differences":  # the same voxels (fewer than are kept), found window by window
            assert sorted(streamed.metrics[key], key=lambda d: d["voxel"]) == sorted(value, key=lambda d: d["voxel"])
            continue
        assert streamed.metrics[key] == (value if isinstance(value, (str, dict)) else pytest.approx(value, rel=1e-12)), key
    diffs = streamed.metrics["label_differences"]  # found in their windows, placed in the volume
    (diff,) = [d for d in diffs if d["voxel"] == [7, 3, 4]]
    assert all(d["tf_margin"] >= 0 and d["torch_margin"] >= 0 for d in diffs)
    assert diff["voxel"] == [7, 3, 4] and diff["torch_label"] == 2 and diff["tf_label"] == int(tf_out[:, 7, 3, 4].argmax())
    assert diff["tf_margin"] == pytest.approx(float(tf_out[diff["tf_label"], 7, 3, 4] - tf_out[2, 7, 3, 4]))
    assert diff["torch_margin"] == pytest.approx(float(pt_out[2, 7, 3, 4] - pt_out[diff["tf_label"], 7, 3, 4]))
    assert "max_rel_error_is_lower_bound" not in streamed.metrics
    assert np.array_equal(streamed.tf_labels, whole.tf_labels) and np.array_equal(streamed.pt_labels, whole.pt_labels)
    assert np.array_equal(streamed.diff_map, whole.diff_map)


def test_a_relative_error_that_may_have_been_dropped_is_flagged(monkeypatch):
    monkeypatch.setattr(cmp, "REL_KEEP", 2)
    tf_out = np.array([1e-2, 2e-2, 1.0, 100.0], np.float32).reshape(1, 4, 1, 1)
    pt_out = tf_out + np.array([1e-3, 1e-3, 1e-4, 0.0], np.float32).reshape(1, 4, 1, 1)
    acc = cmp.StreamingComparison((4, 1, 1), 1)
    # the first part keeps its two largest relative errors (at the small values) and drops 1e-4 at 1.0;
    # the second raises the scale to 100, which makes the kept ones insignificant, and the dropped one not
    acc.add(tf_out[:, :3], pt_out[:, :3], (slice(0, 3), slice(None), slice(None)))
    acc.add(tf_out[:, 3:], pt_out[:, 3:], (slice(3, 4), slice(None), slice(None)))
    m = acc.finish().metrics
    assert m["max_rel_error"] == 0.0 and m["max_rel_error_is_lower_bound"] is True
    assert cmp.compare(tf_out, pt_out).metrics["max_rel_error"] == pytest.approx(1e-4, rel=1e-2)


def test_the_cost_line_is_the_slope_between_the_probes():
    fixed, per_voxel = win.cost_line([(1000, 5_000_000), (3000, 9_000_000)], base=4_500_000)
    assert per_voxel == 2000 and fixed == 3_000_000 + 1_500_000  # the line, not below the loaded RSS
    fixed, per_voxel = win.cost_line([(1000, 5_000_000)], base=4_000_000)
    assert (fixed, per_voxel) == (4_000_000, 1000)  # one probe: from the loaded RSS, conservative


MiB = 1 << 20


def _plan(budget, tf_idle=200 * MiB, shape=(64, 64, 64), border=0):
    return win.plan_memory(shape, 8, budget, border, 200 * MiB, [(8 ** 3, 210 * MiB), (16 ** 3, 220 * MiB)], tf_idle,
                           300 * MiB, [(8 ** 3, 310 * MiB), (16 ** 3, 330 * MiB)], out_channels=4, in_channels=1)


def test_the_window_fits_the_larger_phase_within_the_budget():
    window, est = _plan(1 << 30)
    voxels = int(np.prod(window))
    assert window == [window[0]] * 3 and window[0] % 8 == 0 and 8 < window[0] < 64
    assert est["estimated_peak_bytes"] <= (1 << 30) * win.PLAN_FRACTION
    # the cost model: TF's line beside the loaded parent, or torch's (and what it holds) beside TF idle
    tf_line = win.cost_line([(8 ** 3, 210 * MiB), (16 ** 3, 220 * MiB)], 200 * MiB)
    pt_line = win.cost_line([(8 ** 3, 310 * MiB), (16 ** 3, 330 * MiB)], 300 * MiB)

    def cost(side):
        return max(tf_line[0] + 300 * MiB + tf_line[1] * side ** 3, 200 * MiB + pt_line[0] + (pt_line[1] + 20) * side ** 3)

    plan = (1 << 30) * win.PLAN_FRACTION
    largest = max(s for s in range(8, 65, 8) if cost(s) <= plan)
    assert cost(window[0]) <= plan < cost(largest + 8) and window[0] <= largest
    assert _plan(4 << 30)[0] == [64, 64, 64], "more memory, larger windows"
    assert _plan(1 << 30, tf_idle=400 * MiB)[0][0] < window[0], "a TF child that keeps memory leaves less"
    with pytest.raises(InputError, match="too small"):
        _plan(500 * MiB)
    with pytest.raises(InputError, match="leave no core inside a border of 40"):
        _plan(1 << 30, border=40)


def test_on_a_gpu_its_memory_is_held_to_the_budget_too():
    host_only = _plan(1 << 30)[0]
    gpu = [(v, 100 * MiB + v * 40_000) for v in (8 ** 3, 16 ** 3)]  # 40 kB a voxel on the GPU
    window, est = win.plan_memory((64, 64, 64), 8, 1 << 30, 0, 200 * MiB, [(8 ** 3, 210 * MiB), (16 ** 3, 220 * MiB)],
                                  200 * MiB, 300 * MiB, [(8 ** 3, 310 * MiB), (16 ** 3, 330 * MiB)], 4, 1,
                                  gpu_points=gpu)
    assert window[0] < host_only[0] and est["gpu"]["bytes_per_voxel"] == pytest.approx(40_000)
    assert est["gpu"]["fixed_bytes"] + 40_000 * window[0] ** 3 <= (1 << 30) * win.PLAN_FRACTION


def test_the_window_is_the_cheapest_grid_that_fits():
    shape, border = (192, 232, 184), 8  # whole-brain sizes
    window = win.choose_window(shape, 120 ** 3, [(0.0, 1.0)], 8, border)  # sides up to 120 fit

    def work(side):
        return sum(w.voxels for w in win.plan_grid(shape, [min(side, d) for d in shape], border))

    assert window == [104, 104, 104] and work(104) < work(120), "104 needs as many windows as 120, smaller ones"
    assert work(104) == min(work(s) for s in range(24, 121, 8))
    assert win.choose_window(shape, 1 << 40, [(0.0, 1.0)], 8, border) == list(shape), "room to spare: one window"


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
    pytest.importorskip("tensorflow")
    from tf2pt.verify import verify

    return verify(EXAMPLE, "highresnet", crop=[40, 40, 40]).to_dict()


def test_windows_of_the_real_model_agree_with_the_whole_volume_run(whole_run, cli_run, tmp_path, tf):
    r = cli_run("verify", EXAMPLE, "-m", "highresnet", *CROP, "--window", "24", "24", "24", "--window-border", "4",
                "--json", tmp_path / "w.json", "--figure", tmp_path / "w.png")
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads((tmp_path / "w.json").read_text())
    w = d["windowed"]
    assert w["windows"] == 8 and w["window"] == [24, 24, 24] and w["border"] == 4 and w["exact_tiling"] is False
    peak = w["peak_rss_bytes"]
    assert max(peak["tf"], peak["torch"]) < peak["together"] <= peak["tf"] + peak["torch"]
    assert d["voxels"] == whole_run["voxels"] == 40 ** 3 and d["argmax_agreement"] == 1.0
    assert d["max_abs_error"] <= 2 * whole_run["max_abs_error"] and d["tf_side"] == "original-graph"
    assert d["max_abs_error"] > 0, "two frameworks never agree to the bit: a zero would mean one side ran twice"
    assert "windows:        8 of 24x24x24, border 4" in r.stdout and "peak RSS" in r.stdout
    assert "tf2pt verify: window 8 of 8 (24x24x24)" in r.stderr


def test_max_memory_plans_from_measured_probes(cli_run, tmp_path, tf):
    r = cli_run("verify", EXAMPLE, "-m", "highresnet", *CROP, "--max-memory", "64GiB", "--json", tmp_path / "m.json")
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads((tmp_path / "m.json").read_text())
    w, plan = d["windowed"], d["windowed"]["memory_plan"]
    assert w["windows"] == 1 and w["window"] == [40, 40, 40], "the whole crop fits 64 GiB: one window"
    assert w["border"] == 43 and w["exact_tiling"] is True  # the mapping's receptive field, by default
    assert plan["probes"] == [32 ** 3, 40 ** 3] and plan["tf_bytes_per_voxel"] > 0 and plan["torch_bytes_per_voxel"] > 0
    assert plan["loaded_bytes"]["tf"] > 100 << 20 and w["peak_rss_bytes"]["together"] < 64 << 30
    assert d["passed"] is True and d["argmax_agreement"] == 1.0


@pytest.mark.parametrize("args,message", [
    (["--max-memory", "300MiB"], "is too small"),
    (["--window-border", "4"], "--window-border applies to a windowed verify"),
    (["--window", "20", "24", "24", "--window-border", "4"], "each a multiple of 8"),
    (["--window", "24", "24", "24"], "no core inside a border of 43"),
    (["--window", "24", "24", "24", "--per-layer"], "do not combine"),
])
def test_windowed_usage_errors_exit_2_in_one_line(args, message, cli_run, tf):
    r = cli_run("verify", EXAMPLE, "-m", "highresnet", *CROP, *args)
    assert r.returncode == 2 and message in r.stderr, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_size_that_is_not_one_is_a_usage_error(cli_run):
    r = cli_run("verify", EXAMPLE, "-m", "highresnet", "--max-memory", "lots")
    assert r.returncode == 2 and "--max-memory" in r.stderr


def test_the_summary_never_rounds_a_differing_voxel_to_100_percent():
    from tf2pt.verify.run import _agreement_text

    assert _agreement_text(1.0, 8196096) == "100% of 8196096 voxels"
    assert _agreement_text(1 - 1 / 8196096, 8196096) == "99.999988% of 8196096 voxels (1 differ)"


def test_a_differing_label_says_how_near_a_tie_it_was():
    """A voxel whose two best logits TF rounds one way and PyTorch the other is reported with
    both margins; the summary says whether TF's margin is within the tolerance (a near-tie)."""
    from tf2pt.verify.run import _label_difference_lines

    tf_out = np.zeros((3, 2, 2, 2), np.float32)
    tf_out[1] = 1.0  # label 1 everywhere
    tf_out[2, 0, 1, 1] = 1.0 - 3e-6  # a near-tie with label 2 at one voxel
    tf_out[2, 1, 1, 0] = 0.5  # label 1 by a clear margin at another
    pt_out = tf_out.copy()
    pt_out[2, 0, 1, 1] = 1.0 + 2e-6  # rounded the other way
    pt_out[2, 1, 1, 0] = 1.5  # a real difference
    acc = cmp.StreamingComparison((2, 2, 2), 3)
    acc.add(tf_out[:, :1], pt_out[:, :1], (slice(0, 1), slice(None), slice(None)))
    acc.add(tf_out[:, 1:], pt_out[:, 1:], (slice(1, 2), slice(None), slice(None)))
    diffs = acc.finish().metrics["label_differences"]
    assert [(d["voxel"], d["tf_label"], d["torch_label"]) for d in diffs] == [([0, 1, 1], 1, 2), ([1, 1, 0], 1, 2)]
    assert diffs[0]["tf_margin"] == pytest.approx(3e-6, rel=0.05) and diffs[0]["torch_margin"] == pytest.approx(2e-6, rel=0.05)
    assert diffs[1]["tf_margin"] == pytest.approx(0.5)
    lines = _label_difference_lines(diffs, atol=1e-4)
    assert "voxel [0, 1, 1]: TF 1, PyTorch 2" in lines[0] and "a near-tie" in lines[0]
    assert "beyond atol" in lines[1] and "1 of the 2 listed in the JSON report are near-ties" in lines[2]
    assert _label_difference_lines(None, 1e-4) == []
