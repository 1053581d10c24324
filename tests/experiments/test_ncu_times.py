"""ncu_times: per-step kernel times from Nsight Compute's per-kernel summary, on a log written here
in ncu's layout (random durations, units, launch counts)."""

import numpy as np

from experiments.ncu_times import main, parse


def _entry(name, grid, calls, avg, unit):
    return (f"  {name} ({grid}, 1, 1)x(128, 1, 1), Device 0, CC 9.0, Invocations {calls}\n"
            f"    Section: Command line profiler metrics\n"
            f"    Metric Name            Metric Unit Minimum Maximum Average\n"
            f"    ---------------------- ----------- ------- ------- -------\n"
            f"    gpu__time_duration.sum          {unit}  1.00  2.00  {avg}\n")


def test_parse_and_per_step_sums(tmp_path, capsys):
    rng = np.random.default_rng(3)
    steps = 4
    kernels = [("cce_neg_fwd_block", 1024, steps, rng.uniform(100, 300), "us"),
               ("cce_neg_bwd_block", 1024, steps, rng.uniform(0.3, 0.9), "ms"),
               ("wrapped_convert", 250000, steps + 1, rng.uniform(100, 300), "us"),  # + input prep
               ("input_reduce_fusion", 64, 2 * steps, rng.uniform(3, 5), "us"),
               ("autotune_candidate", 8, 1, rng.uniform(10, 90), "us"),  # compile time only
               ("stream_executor::RedzoneAllocatorKernelImpl", 8192, 30, 27.5, "us")]
    text = "== D=128 grad\n==PROF== Disconnected from process 1\n" + "".join(
        _entry(n, g, c, f"{a:.2f}", u) for n, g, c, a, u in kernels)
    text += "== D=64 loss\n" + _entry("cce_neg_fwd_block", 1024, steps, "1,234.50", "ns")
    sections = parse(text)
    assert list(sections) == ["D=128 grad", "D=64 loss"]
    got = {k[0]: k for k in sections["D=128 grad"]}
    assert "stream_executor::RedzoneAllocatorKernelImpl" not in got  # autotuning helper
    for name, grid, calls, avg, unit in kernels[:5]:
        want = round(avg, 2) * (1e3 if unit == "ms" else 1.0)
        assert got[name][1:3] == (f"{grid},1,1", calls) and np.isclose(got[name][3], want)
    assert np.isclose(sections["D=64 loss"][0][3], 1.2345)

    path = tmp_path / "times.log"
    path.write_text(text)
    main([str(path), "--steps", str(steps)])
    out = capsys.readouterr().out
    per_step = sum((c // steps) * round(a, 2) * (1e3 if u == "ms" else 1.0)
                   for _, _, c, a, u in kernels[:4])
    assert f"per step: {per_step:.1f} us" in out
    assert "autotune_candidate" not in out  # launched fewer times than the steps
