"""The large-corpus mode of nlpseq.bench (nlpseq.bench_corpus): generated corpora are valid files of the task's
format with exactly the examples they claim, and the mode trains on them out of core and in memory, watching memory."""
import json
import re
from collections import namedtuple

import pytest

from nlpseq import bench, bench_corpus
from nlpseq.errors import NlpseqError

SIZE = 300_000  # bytes: many passes over each sample, cut inside the last one


def _sentences(text: str) -> list[list[str]]:
    blocks = [[line for line in b.splitlines() if line.strip()] for b in re.split(r"\n\s*\n", text)]
    return [b for b in blocks if b and not b[0].startswith("-DOCSTART-")]


@pytest.mark.parametrize("task", list(bench_corpus.SPECS))
def test_corpus_has_the_size_and_the_examples_it_reports(tmp_path, task):
    paths, written, examples = bench_corpus.write_corpus(task, tmp_path / "c", SIZE)
    data = [p.read_bytes() for p in paths]
    assert written == sum(map(len, data)) <= SIZE
    assert written > SIZE - 2_000  # cut at the last whole unit that fits, not a block earlier
    texts = [d.decode("utf-8") for d in data]  # whole UTF-8 characters
    if task == "sentiment":
        lines = texts[0].splitlines()
        header = (bench_corpus.sample_dir(task) / "train.tsv").read_text(encoding="utf-8").splitlines()[0]
        assert lines[0] == header and len(lines) - 1 == examples
        assert all(len(line.split("\t")) == len(header.split("\t")) for line in lines)
    elif task == "ner":
        assert texts[0].endswith("\n\n") and texts[0].startswith("-DOCSTART-")
        sentences = _sentences(texts[0])
        assert len(sentences) == examples
        assert all(len(line.split()) >= 2 for s in sentences for line in s)  # token and tag
        assert texts[0].count("-DOCSTART-") >= examples / bench_corpus.DOC_SENTENCES  # documents of <= 20
    elif task == "translation":
        src, tgt = (t.splitlines() for t in texts)
        assert len(src) == len(tgt) == examples and all(s.strip() for s in src) and all(t.strip() for t in tgt)
        sample = dict(zip(*((bench_corpus.sample_dir(task) / f"train.{s}").read_text(encoding="utf-8").splitlines()
                            for s in ("de", "en"))))
        assert all(sample[s] == t for s, t in zip(src[:500], tgt[:500]))  # pairs stay aligned
    else:
        assert texts[0].endswith("\n\n") and texts[0].count("\n\n") >= examples
    # shuffled: not the sample's order, and another seed gives another corpus of the same kind
    other, _, _ = bench_corpus.write_corpus(task, tmp_path / "d", SIZE, seed=1)
    assert other[0].read_bytes() != data[0]


def test_corpus_smaller_than_one_example_is_empty_not_broken(tmp_path):
    paths, written, examples = bench_corpus.write_corpus("ner", tmp_path / "c", 10)
    assert examples == 0 and written == 0 and paths[0].read_bytes() == b""


def test_sizes_parse_and_bad_ones_name_the_option():
    assert bench_corpus.parse_sizes("large_corpus", "0.25,1,4") == [0.25, 1.0, 4.0]
    assert bench_corpus.parse_sizes("large_corpus", "[0.5, 2]") == [0.5, 2.0]
    with pytest.raises(NlpseqError, match=r"bench\.in_memory: expected sizes in GB"):
        bench_corpus.parse_sizes("in_memory", "1GB")
    with pytest.raises(NlpseqError, match=r"bench\.large_corpus: sizes must be positive"):
        bench_corpus.parse_sizes("large_corpus", "0,1")


def test_anon_growth_compares_the_out_of_core_ends():
    rows = [{"corpus_gb": 0.01, "out_of_core": False, "peak_anon_mb": 900.0},
            {"corpus_gb": 1.0, "out_of_core": True, "peak_anon_mb": 500.0},
            {"corpus_gb": 0.25, "out_of_core": True, "peak_anon_mb": 470.0}]
    assert bench_corpus.anon_growth(rows) == {"from_gb": 0.25, "to_gb": 1.0, "from_mb": 470.0, "to_mb": 500.0,
                                              "mb_per_gb": 40.0}
    assert bench_corpus.anon_growth(rows[:2]) is None  # one out-of-core size: nothing to compare


def test_bad_settings_stop_before_any_corpus_is_written(tmp_path, capsys, monkeypatch):
    base = ["task=ner", "bench.large_corpus=0.001", f"bench.corpus_dir={tmp_path}", f"bench.out={tmp_path / 'b.json'}"]
    assert bench.main([*base, "model.no_such_key=1"]) == 2
    assert bench.main(["task=ner", "bench.large_corpus=a,b"]) == 2
    assert bench.main(["task=ner", "bench.large_corpus=0.001", f"bench.corpus_dir={tmp_path / 'missing'}"]) == 2
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(bench_corpus.shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 10**6, 10**6))
    assert bench.main(["task=ner", "bench.large_corpus=0.5", f"bench.corpus_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "bench.large_corpus: expected sizes in GB" in err
    assert f"bench.corpus_dir: {tmp_path / 'missing'} is not a directory" in err
    assert "0.0 GB free" in err and "need about 1.0 GB" in err
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.slow
def test_large_corpus_mode_trains_out_of_core_and_in_memory(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert bench.main(["task=ner", "bench.large_corpus=0.0003,0.0006", "bench.in_memory=0.0002", "bench.steps=2",
                       f"bench.corpus_dir={tmp_path}", f"bench.out={out}"]) == 0
    result = json.loads(out.read_text())
    assert result["task"] == "ner" and result["machine"]
    lc = result["large_corpus"]
    assert [(r["corpus_gb"], r["out_of_core"]) for r in lc["rows"]] == [(0.0002, False), (0.0003, True), (0.0006, True)]
    for r in lc["rows"]:
        assert r["peak_rss_mb"] > 0 and r["train_tokens_per_s"] > 0 and r["to_training_s"] > 0
        if r["out_of_core"]:  # the whole corpus was encoded into the run's cache
            assert r["train_examples"] == r["corpus_examples"] > 0
            assert r["prep_s"] is not None and r["cache_mb"] > 0 and r["distinct_words"] > 0
    assert lc["anon_growth"]["from_gb"] == 0.0003 and lc["anon_growth"]["to_gb"] == 0.0006
    assert list(tmp_path.iterdir()) == [out]  # corpora and runs deleted
    printed = capsys.readouterr().out
    assert "| 0.3 MB | out of core |" in printed and "| 0.2 MB | in memory |" in printed


@pytest.mark.slow
def test_a_failed_training_run_reports_its_command_and_output(tmp_path, capsys):
    assert bench.main(["task=sentiment", "bench.large_corpus=0.0002", "bench.steps=2", "model.encoder.hidden_size=0",
                       f"bench.corpus_dir={tmp_path}", f"bench.out={tmp_path / 'b.json'}"]) == 2
    err = capsys.readouterr().err
    assert "error: training failed (exit" in err and "model.encoder.hidden_size=0" in err
    assert "hidden_size" in err.split("--- last output lines ---")[1]
    assert list(tmp_path.iterdir()) == []
