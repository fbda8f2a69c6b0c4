import json


def test_bench_measures_and_writes_json(tmp_path, cli):
    out = tmp_path / "b.json"
    proc = cli(["task=sentiment", "bench.steps=12", "bench.warmup=2", "bench.repeats=1", "bench.infer_sentences=64",
                f"bench.out={out}"], cwd=tmp_path, module="nlpseq.bench")
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())
    for key in ("train_tokens_per_sec_nlpseq", "train_tokens_per_sec_plain", "ratio_nlpseq_vs_plain",
                "padding_share", "share_of_roof", "infer_sentences_per_sec_b1", "infer_sentences_per_sec_b64",
                "peak_rss_mb"):
        assert r[key] is not None and r[key] >= 0, key
    assert 0 <= r["padding_share"] < 0.5 and r["train_tokens_per_sec_nlpseq"] > 0


def test_bench_rejects_unknown_option(tmp_path, cli):
    proc = cli(["task=sentiment", "bench.stepz=3"], cwd=tmp_path, module="nlpseq.bench")
    assert proc.returncode == 2 and "bench.stepz: unknown option" in proc.stderr
