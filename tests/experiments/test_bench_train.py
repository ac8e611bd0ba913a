"""The train-throughput benchmark: the configuration it times and the ratios its table reports."""

import arch
from experiments.bench.train import FAMILIES, bench_run, table


def test_bench_config_is_the_one_compared_with_hugging_face():
    for preset in FAMILIES.values():
        cfg = bench_run(preset, "bfloat16", 8, 512).model_config()
        assert (cfg.vocab_size, cfg.width, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                cfg.mlp_width) == (8192, 256, 6, 4, 1, 64, 1024)
        assert cfg.matmul_dtype == "bfloat16"
        if "L" in cfg.pattern:
            assert cfg.window == 128
    assert arch.preset(FAMILIES["gemma3"]).pattern == "LLLLLG"


def row(impl, dtype, tok_s, median_ms, cpu_tok_s):
    return dict(preset="p", impl=impl, dtype=dtype, step_ms=4096e3 / tok_s, median_ms=median_ms,
                tokens_per_s=tok_s, cpu_tokens_per_s=cpu_tok_s, mfu=tok_s / 2e4, loss=1.0)


def test_table_ratios_use_each_side_best_then_medians_and_cpu_time():
    rows = [row("ours", "float32", 3000, 1400, 3100), row("ours", "bfloat16", 9000, 500, 9500),
            row("hf-eager", "float32", 2000, 2100, 2000), row("hf-eager", "bfloat16", 6000, 700, 6200),
            row("hf-sdpa", "bfloat16", 5500, 800, 6400)]
    line = table(rows).splitlines()[1]
    assert "hf-eager bfloat16" in line and "9,000" in line and "6,000" in line
    fields = line.split()
    # fastest against fastest; then the median steps of those two rows; then CPU time, best of each side
    assert fields[-3:] == ["1.50x", "1.40x", f"{9500 / 6400:.2f}x"]


def test_table_takes_our_best_over_devices_and_names_it():
    rows = [row("ours", "bfloat16", 8000, 510, 8500), row("ours-dp2", "bfloat16", 9000, 450, 9200),
            row("hf-eager", "bfloat16", 6000, 675, 6100)]
    line = table(rows).splitlines()[1]
    assert "ours-dp2 bfloat16" in line and "9,000" in line
    assert line.split()[-3:] == ["1.50x", "1.50x", f"{9200 / 6100:.2f}x"]
