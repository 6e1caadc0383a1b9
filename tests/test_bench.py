"""`omniref bench --quick` runs every part end to end and writes its figures (a smoke run: the speed targets
themselves are benchmark figures, reported side by side in one run, never asserted by tests)."""
import json

import pytest

from omniref import _native, bench

pytestmark = pytest.mark.skipif(not _native.available(), reason="C++ extension not built")


def test_quick_bench_writes_every_part(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    for part in bench.PARTS:
        assert part in res and "error" not in res[part], (part, res.get(part))
    k = res["kernels"]
    assert k["gemm"]["cpp_gflops"] > 0 and k["gemm"]["numpy_gflops"] > 0
    assert k["gemm"]["ratio"] == pytest.approx(k["gemm"]["cpp_gflops"] / k["gemm"]["numpy_gflops"])
    assert k["gemv"]["matrices"] > 1 and k["gemv_cached"]["matrices"] == 1 and k["gemv"]["shape"][0] == 1
    assert res["bf16"]["matrices"] >= 2 and res["bf16"]["fraction_of_copy"] > 0
    t = res["thinker"]
    assert t["prefill_ratio"] == pytest.approx(t["numpy_prefill_s"] / t["cpp_prefill_s"])
    assert res["code2wav"]["audio_s"] > 0 and res["audio"]["cpp_s"] > 0
    assert "== thinker" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench.main(["--only", "nonsense"])
