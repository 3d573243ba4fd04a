"""graviti bench --quick: the trainer benchmark end to end on a tiny graph, and its output schema."""

import json

import pytest
import torch

from graviti_dist.cli import main


def test_quick_bench_writes_results_that_pass_the_schema(tmp_path, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks.suite import check_result

    assert main(["bench", "--quick", "--out", str(tmp_path / "out"), "--workdir", str(tmp_path / "work")]) == 0
    out = tmp_path / "out"
    payload = json.loads((out / "train-cpu-quick.json").read_text())
    check_result(payload)
    assert {"ours", "dgl"} <= set(payload["systems"]) and set(payload["scaling"]) == {"1", "2"}
    # graviti train itself ran with 1 and 2 workers, and is compared with the same run's harness and DGL
    product = payload["product"]
    assert set(product) == {"1", "2"} and all(e["epochs"] == 2 and e["vs"]["dgl"] > 0 for e in product.values())
    assert product["2"]["threads_per_worker"] == max(1, payload["threads"] // 2)
    assert "| 2 x " in (out / "train-cpu-quick.md").read_text().split("What users run")[1]
    assert payload["environment"]["versions"]["dgl"] == "2.1.0"
    for suffix in ("throughput", "breakdown", "scaling"):
        assert (out / f"train-cpu-quick-{suffix}.png").stat().st_size > 1000
    assert "| ours |" in (out / "train-cpu-quick.md").read_text()
    broken = dict(payload, systems={"ours": dict(payload["systems"]["ours"], seeds_per_s=-1)})
    with pytest.raises(ValueError, match="seeds_per_s"):
        check_result(broken)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the CUDA mode would run")
def test_cuda_mode_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    assert main(["bench", "--device", "cuda", "--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--device cuda: torch sees no CUDA device" in err and "Traceback" not in err
