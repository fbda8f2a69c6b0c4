"""`python -m nlpseq.evaluate` / `nlpseq.evaluate.evaluate`: each task's metric on labelled files, for checkpoints
alone and as an ensemble, equal to what the task scripts compute (tasks/*/ensemble.py, benchmark.py) and to
independent computations (torchmetrics, seqeval, sacreBLEU); JSON output, the CLI, and one-line errors.

The checkpoints are the untrained tiny models of the ensemble tests (their builders reused), with vocabularies
and labels that fit the shipped samples: scores are low, but every number is checked."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT

sys.path[:0] = [str(ROOT / "tests" / d) for d in ("ner", "translation", "generation")]
from gen_helpers import TEXT, tiny_model  # noqa: E402
from test_ensemble import sentiment  # noqa: E402
from test_ner_ensemble import tagger  # noqa: E402
from test_seq2seq import DECODERS, sentences, tiny  # noqa: E402

import nlpseq  # noqa: E402
from nlpseq.bench import save_checkpoint  # noqa: E402
from nlpseq.data.tagging import label_set  # noqa: E402
from nlpseq.errors import NlpseqError  # noqa: E402
from nlpseq.evaluate import evaluate, main  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SAMPLE = ROOT / "tasks"


def script(name: str):
    """A task script (tasks/<name>.py) imported as a module, so its own scoring functions can be called."""
    spec = importlib.util.spec_from_file_location(f"script_{name.replace('/', '_')}", SAMPLE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def models_of(report: dict, i: int = 0) -> dict:
    return {r["model"]: r for r in report["results"][i]["models"]}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, list[Path]]:
    """Two checkpoints per task (three for sentiment), whose vocabularies fit the files scored here."""
    out = tmp_path_factory.mktemp("evaluate")
    lines = (SAMPLE / "sentiment" / "sample" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    corpus = [line.split("\t")[0] for line in lines]
    result = {"sentiment": [sentiment(out, f"s{i}", ["negative", "positive"], corpus, i) for i in range(2)]}
    # the third member: labels in the other order (matched by name) and another vocabulary
    result["sentiment"].append(sentiment(out, "s2", ["positive", "negative"], corpus[:200], 2))
    words = [line.split()[0] for line in (SAMPLE / "ner" / "sample" / "train.conll").read_text().splitlines()
             if line.strip() and not line.startswith("-DOCSTART-")]
    labels = label_set(["LOC", "MISC", "ORG", "PER"], "BIOES")
    result["ner"] = []
    for i in range(2):
        result["ner"].append(out / f"ner{i}.ckpt")
        save_checkpoint(tagger(i, corpus=" ".join(words), labels=labels).float(), result["ner"][-1])
    result["translation"] = []
    for i in range(2):
        result["translation"].append(out / f"mt{i}.ckpt")
        save_checkpoint(tiny(DECODERS["bahdanau-gru"], seed=i).float(), result["translation"][-1])
    result["generation"] = []
    for i in range(2):
        result["generation"].append(out / f"lm{i}.ckpt")
        save_checkpoint(tiny_model(seed=i), result["generation"][-1])
    result["dir"] = [out]
    return result


# ---------------------------------------------------------------- each task, against its script

def test_sentiment_matches_the_ensemble_script(ckpts, tmp_path):
    paths = ckpts["sentiment"]
    files = [SAMPLE / "sentiment" / "sample" / name for name in ("dev.tsv", "test.tsv")]
    report = evaluate(paths, files, batch_size=32)
    assert report["task"] == "sentiment" and report["metrics"] == ["accuracy", "macro_f1"]
    out = tmp_path / "script.json"
    assert script("sentiment/ensemble").main(["--ckpt", *map(str, paths), "--data", *map(str, files),
                                               "--json", str(out)]) == 0
    for i, expected in enumerate(json.loads(out.read_text())):
        rows = models_of(report, i)
        assert report["results"][i]["examples"] == expected["examples"] == 300
        assert list(rows) == [*map(str, paths), "ensemble of 3"]
        # the script takes the mean in float32: equal to 1e-6, far below one example in 300
        for path in paths:
            assert rows[str(path)]["accuracy"] == pytest.approx(expected["accuracy"][str(path)], abs=1e-6)
        assert rows["ensemble of 3"]["accuracy"] == pytest.approx(expected["accuracy"]["ensemble of the first 3"],
                                                                  abs=1e-6)
        for row in rows.values():
            assert row["examples"] == 300 and row["sentences_per_s"] > 0 and row["seconds"] > 0
        gain = report["results"][i]["ensemble_gain"]["accuracy"]
        mean = sum(rows[str(p)]["accuracy"] for p in paths) / 3
        assert gain == pytest.approx(rows["ensemble of 3"]["accuracy"] - mean)
    # macro-F1 as training's val/f1 computes it (torchmetrics), on the ensemble's own predictions
    from torchmetrics.classification import MulticlassF1Score

    lines = files[0].read_text(encoding="utf-8").splitlines()[1:]
    gold = [line.split("\t")[1] for line in lines]
    predicted = [p.label for p in nlpseq.load(paths).predict([line.split("\t")[0] for line in lines])]
    labels = ["negative", "positive"]
    f1 = MulticlassF1Score(2, average="macro")(torch.tensor([labels.index(p) for p in predicted]),
                                              torch.tensor([labels.index(g) for g in gold]))
    assert models_of(report)["ensemble of 3"]["macro_f1"] == pytest.approx(float(f1), abs=1e-6)
    assert models_of(report)["ensemble of 3"]["accuracy"] == sum(p == g for p, g in zip(predicted, gold)) / 300


def test_ner_matches_the_benchmark_scoring_and_seqeval(ckpts, tmp_path):
    from seqeval.metrics import f1_score

    from nlpseq.predict import main as predict_main

    paths = ckpts["ner"]
    data = SAMPLE / "ner" / "sample" / "dev.conll"
    report = evaluate(",".join(map(str, paths)), str(data))
    result = report["results"][0]
    assert result["examples"] == 150 and result["scheme"] == "IOB2"
    bench = script("ner/benchmark")
    for ckpt, row in zip([*map(str, paths), ",".join(map(str, paths))], result["models"]):
        # the benchmark's route: tag the column file through the predict CLI, score its last two columns
        target = tmp_path / "pred.conll"
        assert predict_main([f"ckpt={ckpt}", f"input={data}", f"output={target}"]) == 0
        expected = bench.score_column_file(target)
        for key in ("f1", "precision", "recall", "accuracy"):
            assert row[key] == expected[key]
        assert row["per_type"] == {t: v["f1"] for t, v in expected["per_type"].items()}
        sents, gold, pred = [], [], []
        for line in target.read_text().splitlines() + [""]:
            cells = line.split()
            if (not cells or cells[0] == "-DOCSTART-") and sents:
                gold.append([c[-2] for c in sents])
                pred.append([c[-1] for c in sents])
                sents = []
            elif cells and cells[0] != "-DOCSTART-":
                sents.append(cells)
        assert row["f1"] == pytest.approx(f1_score(gold, pred), abs=1e-9)
        assert row["tokens"] == sum(map(len, gold)) and row["sentences_per_s"] > 0
    assert [r["model"] for r in result["models"]] == [*map(str, paths), "ensemble of 2"]


def test_translation_matches_the_benchmark_and_takes_aligned_files(ckpts, tmp_path, monkeypatch):
    import sacrebleu

    paths = ckpts["translation"]
    src = sentences(24, 3)
    ref = [" ".join(reversed(s.split())) for s in src]
    (tmp_path / "test_2016_flickr.de").write_text("\n".join(src) + "\n", encoding="utf-8")
    (tmp_path / "test_2016_flickr.en").write_text("\n".join(ref) + "\n", encoding="utf-8")
    pair = f"{{src:{tmp_path / 'test_2016_flickr.de'},tgt:{tmp_path / 'test_2016_flickr.en'}}}"
    bench = script("translation/benchmark")
    monkeypatch.setattr(bench, "DATA", tmp_path)
    for beam, key in ((1, "greedy"), (5, "beam5")):
        report = evaluate(paths, pair, beam_size=beam)
        assert report["options"]["beam_size"] == beam
        rows = report["results"][0]["models"]
        assert report["results"][0]["data"].endswith("test_2016_flickr.de / " + str(tmp_path / "test_2016_flickr.en"))
        for ckpt, row in zip([*paths, paths], rows):
            out_dir = tmp_path / "hyps"
            out_dir.mkdir(exist_ok=True)
            expected = bench.evaluate(ckpt, 1, out_dir, precisions=("fp32",))[key]
            assert row["bleu"] == pytest.approx(expected["bleu"], abs=1e-9)
            assert row["chrf"] == pytest.approx(expected["chrf"], abs=1e-9)
            hyps = (out_dir / f"test_2016_flickr.{key}.en").read_text(encoding="utf-8").splitlines()
            assert row["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [ref]).score, abs=1e-9)
    # a TSV table of the same pairs scores the same; the checkpoint's own beam size is the default
    table = tmp_path / "pairs.tsv"
    table.write_text("".join(f"{s}\t{r}\n" for s, r in zip(src, ref)), encoding="utf-8")
    report = evaluate(paths[0], table, beam_size=5)
    assert report["results"][0]["models"][0]["bleu"] == pytest.approx(rows[0]["bleu"])
    assert evaluate(paths[0], table)["options"]["beam_size"] == nlpseq.load(paths[0]).model.search_cfg["beam_size"]


def test_generation_matches_the_benchmark_held_out_loss(ckpts, tmp_path):
    paths = ckpts["generation"]
    text = tmp_path / "held.txt"
    text.write_text(TEXT * 40, encoding="utf-8")  # 3,400 characters: two windows of 2,048, the state carried
    bench = script("generation/benchmark")
    for start in (0.0, 0.5):
        report = evaluate(paths, text, start=start)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            bench.ensemble([str(p) for p in paths], text, start)
        lines = printed.getvalue().splitlines()
        assert int(lines[0].split()[0].replace(",", "")) == report["results"][0]["tokens"]
        expected = [float(line.split()[0]) for line in lines[1:]]  # members, then the ensemble (4 decimals)
        rows = report["results"][0]["models"]
        assert [round(r["loss"], 4) for r in rows] == expected
        assert rows[-1]["bpc"] == pytest.approx(rows[-1]["loss"] / 0.6931471805599453)
        assert rows[0]["tokens_per_s"] > 0 and len(rows) == 3
    # the ensemble's loss is exactly the mean of the members' probabilities, token by token
    from nlpseq.text.tokenizer import BOS_ID

    members = [nlpseq.load(p).model for p in paths]
    seq = torch.tensor([[BOS_ID, *members[0].tokenizer.hf.encode(TEXT * 40, add_special_tokens=False).ids]])
    with torch.no_grad():
        lps = [torch.log_softmax(m(seq[:, :-1])[0][0].double(), -1).gather(1, seq[0, 1:, None])[:, 0] for m in members]
    mixed = -(torch.logsumexp(torch.stack(lps), 0) - torch.log(torch.tensor(2.0, dtype=torch.float64))).mean()
    assert evaluate(paths, text)["results"][0]["models"][-1]["loss"] == pytest.approx(float(mixed), abs=1e-5)


def test_generation_lines_mode_with_conditions(tmp_path):
    path = tmp_path / "cond.ckpt"
    save_checkpoint(tiny_model(conditions=["a", "b"]), path)
    data = tmp_path / "styles.jsonl"
    rows = [{"text": "To be, or not", "style": "a"}, {"text": "that is the question", "style": "b"},
            {"text": "", "style": "a"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    report = evaluate(path, data, condition_column="style")
    [row] = report["results"][0]["models"]
    model = nlpseq.load(path).model
    total, count = 0.0, 0
    with torch.no_grad():  # each row alone: <s> text </s> from its condition's state
        for r in rows:
            ids = torch.tensor([[2, *model.tokenizer.encode(r["text"]), 3]])
            logits, _ = model(ids[:, :-1], conditions=torch.tensor([model.conditions.index(r["style"])]))
            total -= float(torch.log_softmax(logits[0], -1).gather(1, ids[0, 1:, None]).sum())
            count += ids.size(1) - 1
    assert row["loss"] == pytest.approx(total / count, rel=1e-5) and row["tokens"] == count and row["examples"] == 3
    with pytest.raises(NlpseqError, match=r"condition_column: this model was trained with conditions \(a, b\)"):
        evaluate(path, data)
    rows.append({"text": "x", "style": "zzz"})
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(NlpseqError, match=r"styles\.jsonl:4: condition 'zzz' was never seen in training"):
        evaluate(path, data, condition_column="style")


# ---------------------------------------------------------------- options, output, CLI

def test_members_false_scores_the_ensemble_only_and_run_config_names_columns(ckpts, tmp_path):
    paths = ckpts["sentiment"][:2]
    report = evaluate(paths, SAMPLE / "sentiment" / "sample" / "dev.tsv", members=False)
    assert [r["model"] for r in report["results"][0]["models"]] == ["ensemble of 2"]
    assert "ensemble_gain" not in report["results"][0]
    # a checkpoint in a run directory: the run's data settings name the columns; the command line overrides them
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / ".hydra").mkdir()
    ckpt = run / "checkpoints" / "best.ckpt"
    ckpt.write_bytes(paths[0].read_bytes())
    (run / ".hydra" / "config.yaml").write_text("data:\n  train: ${nlpseq.root:}/x.tsv\n  text_column: review\n"
                                                "  label_column: [polarity]\n")
    lines = (SAMPLE / "sentiment" / "sample" / "dev.tsv").read_text(encoding="utf-8").splitlines()
    data = tmp_path / "renamed.tsv"
    data.write_text("\n".join(["review\tpolarity", *lines[1:]]) + "\n", encoding="utf-8")
    report = evaluate(ckpt, data)
    assert report["options"]["text_column"][0] == "review" and report["options"]["label_column"][0] == "polarity"
    plain = evaluate(paths[0], SAMPLE / "sentiment" / "sample" / "dev.tsv")
    assert models_of(report)[str(ckpt)]["accuracy"] == models_of(plain)[str(paths[0])]["accuracy"]
    with pytest.raises(NlpseqError, match=r"no column 'other' \(option data.text_column\)"):
        evaluate(ckpt, data, text_column="other")


def test_cli_prints_a_table_and_writes_json(ckpts, tmp_path, cli):
    paths = ckpts["sentiment"][:2]
    data = SAMPLE / "sentiment" / "sample" / "dev.tsv"
    out = tmp_path / "results.json"
    proc = cli([f"ckpt={paths[0]},{paths[1]}", f"data={data}", f"output={out}", "batch_size=16"], cwd=tmp_path,
               module="nlpseq.evaluate", env_extra={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "accuracy" in proc.stdout and "ensemble of 2" in proc.stdout and str(paths[0]) in proc.stdout
    assert "ensemble - mean of members: accuracy" in proc.stdout and "Traceback" not in proc.stderr
    report = json.loads(out.read_text())
    expected = evaluate(paths, data, batch_size=16)
    for got, want in zip(report["results"][0]["models"], expected["results"][0]["models"]):
        assert (got["model"], got["accuracy"], got["macro_f1"], got["examples"]) == \
               (want["model"], want["accuracy"], want["macro_f1"], want["examples"])
    assert report["batch_size"] == 16 and report["checkpoints"] == [str(p) for p in paths]


def test_output_dash_prints_json_only(ckpts, capsys):
    data = SAMPLE / "ner" / "sample" / "test.conll"
    assert main([f"ckpt={ckpts['ner'][0]}", f"data={data}", "output=-"]) == 0
    report = json.loads(capsys.readouterr().out)
    [row] = report["results"][0]["models"]
    assert row["model"] == str(ckpts["ner"][0]) and 0 <= row["f1"] <= 1 and "ensemble_gain" not in report["results"][0]


# ---------------------------------------------------------------- errors: one line, exit status 2

def run_main(args: list[str], capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "Traceback" not in "\n".join(err)
    return err[-1]


def test_errors_name_the_option_file_and_line(ckpts, tmp_path, capsys):
    s0, n0 = ckpts["sentiment"][0], ckpts["ner"][0]
    dev = SAMPLE / "sentiment" / "sample" / "dev.tsv"
    assert run_main([f"data={dev}"], capsys).startswith("error: ckpt: missing")
    assert run_main([f"ckpt={s0}"], capsys).startswith("error: data: missing")
    assert run_main([f"ckpt={s0}", f"data={dev}", "beam_size=3"], capsys).startswith(
        "error: beam_size: unknown option for sentiment (known: ckpt, data")
    assert run_main([f"ckpt={s0}", "data=nowhere.tsv"], capsys) == "error: nowhere.tsv: file not found"
    assert "missing.ckpt: checkpoint not found" in run_main([f"ckpt={s0},{tmp_path / 'missing.ckpt'}", f"data={dev}"],
                                                             capsys)
    assert run_main([f"ckpt={s0}", f"data={dev}", "members=maybe"], capsys) == \
        "error: members: expected true or false, got 'maybe'"
    assert run_main([f"ckpt={s0}", f"data={dev}", "batch_size=0"], capsys) == "error: batch_size: must be >= 1, got 0"
    assert run_main([f"ckpt={s0}", f"data={dev}", "device=warp9"], capsys).startswith("error: device: 'warp9' cannot")
    assert run_main([f"ckpt={s0}", f"data={dev}", "format=xml"], capsys).startswith("error: format: 'xml' is not one")
    assert run_main([f"ckpt={s0}", "oops"], capsys).startswith("error: oops: expected key=value")
    assert run_main([f"ckpt={s0}", f"data={dev}", f"output={dev}"], capsys) == \
        f"error: output: {dev} is a data file (it would be overwritten)"
    # labels the model never saw: which, and where
    bad = tmp_path / "bad.tsv"
    bad.write_text("text\tlabel\ngood film\tpositive\nso so\tneutral\n", encoding="utf-8")
    assert run_main([f"ckpt={s0}", f"data={bad}"], capsys) == (
        f"error: {bad}:3: label 'neutral' was never seen in training (known: ['negative', 'positive'])")
    conll = tmp_path / "bad.conll"
    conll.write_text("John B-PER\nvisited O\nAcme B-COMPANY\n\n", encoding="utf-8")
    assert run_main([f"ckpt={n0}", f"data={conll}"], capsys) == (
        f"error: {conll}:3: entity type 'COMPANY' (tag 'B-COMPANY', token 'Acme') was never seen in training "
        f"(known: LOC, MISC, ORG, PER)")
    # empty files, and a header without examples
    empty = tmp_path / "empty.tsv"
    empty.write_text("", encoding="utf-8")
    assert run_main([f"ckpt={s0}", f"data={empty}"], capsys) == f"error: {empty}: file is empty"
    header = tmp_path / "header.tsv"
    header.write_text("text\tlabel\n", encoding="utf-8")
    assert run_main([f"ckpt={s0}", f"data={header}"], capsys) == f"error: {header}: file has a header but no examples"
    blank = tmp_path / "blank.conll"
    blank.write_text("-DOCSTART- O\n\n", encoding="utf-8")
    assert "no sentences found" in run_main([f"ckpt={n0}", f"data={blank}"], capsys)
    # the other tasks' data shapes
    assert "a pair of aligned files is translation data, not sentiment" in run_main(
        [f"ckpt={s0}", f"data={{src:{dev},tgt:{dev}}}"], capsys)
    lm = ckpts["generation"][0]
    assert run_main([f"ckpt={lm}", f"data={dev}", "start=0.5"], capsys).startswith(
        "error: start: applies to a plain-text file read whole")
    assert run_main([f"ckpt={lm}", f"data={dev}", "condition_column=label"], capsys) == \
        "error: condition_column: this model was trained without conditions"


def test_running_out_of_memory_is_one_line_naming_the_sizes(trained_sentiment, monkeypatch, capsys):
    from nlpseq.predictors.sentiment import SentimentPredictor

    def exhausted(self, *args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 137438953472 bytes.")

    monkeypatch.setattr(SentimentPredictor, "predict", exhausted)
    data = ROOT / "tasks" / "sentiment" / "sample" / "dev.tsv"
    assert main([f"ckpt={trained_sentiment / 'checkpoints' / 'best.ckpt'}", f"data={data}", "batch_size=4096"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: out of memory while evaluating (batch_size=4096); lower")


def test_sentiment_columns_travel_in_the_checkpoint(tmp_path):
    """A checkpoint moved away from its run (no .hydra/config.yaml) still reads files with its own columns."""
    from nlpseq.data.classification import ClassificationDataModule
    from nlpseq.models.classifier import SentimentClassifier

    rows = [("a fine film", "up"), ("a dull film", "down")] * 4
    train = tmp_path / "train.tsv"
    train.write_text("review\tstars\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    dm = ClassificationDataModule(train=str(train), validation=str(train), text_column="review", label_column="stars")
    dm.prepare()
    assert dm.model_inputs()["reader"] == {"text_column": "review", "label_column": "stars"}
    ckpt = tmp_path / "moved.ckpt"
    save_checkpoint(SentimentClassifier(**dm.model_inputs(), embedding={"dim": 4}, encoder={"hidden_size": 4}), ckpt)
    report = evaluate(str(ckpt), str(train))
    assert report["options"]["text_column"][0] == "review" and report["options"]["label_column"][0] == "stars"
    assert report["results"][0]["examples"] == len(rows)


def test_translation_and_generation_settings_travel_in_the_checkpoint(tmp_path):
    """Pair-table fields and a language model's columns are read from the checkpoint when no run config is near."""
    from nlpseq.data.lm import LanguageModelDataModule
    from nlpseq.data.parallel import TranslationDataModule

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"de": s, "en": s}) + "\n" for s in sentences(20, 1)))
    dm = TranslationDataModule(train=str(pairs), validation=str(pairs), src_key="de", tgt_key="en")
    dm.prepare()
    assert dm.model_inputs()["reader"] == {"src_key": "de", "tgt_key": "en"}
    mt = tmp_path / "mt.ckpt"
    save_checkpoint(tiny(DECODERS["bahdanau-gru"], reader=dm.model_inputs()["reader"]).float(), mt)
    report = evaluate(str(mt), str(pairs), beam_size=1)
    assert report["options"]["src_key"] == "de" and report["results"][0]["examples"] == 20

    table = tmp_path / "lines.tsv"
    table.write_text("line\tmood\n" + "".join(f"{t}\t{m}\n" for t, m in [("to be", "a"), ("or not", "b")] * 5))
    lm = LanguageModelDataModule(train=str(table), validation=str(table), mode="lines", text_column="line",
                                 condition_column="mood", tokenizer={"kind": "char"})
    lm.prepare()
    assert lm.model_inputs()["reader"] == {"mode": "lines", "text_column": "line", "condition_column": "mood"}
    from nlpseq.models.language_model import LanguageModel

    gen = tmp_path / "lm.ckpt"
    save_checkpoint(LanguageModel(**lm.model_inputs(), embedding={"dim": 4}, decoder={"hidden_size": 4},
                                  samples={"prompts": []}), gen)
    report = evaluate(str(gen), str(table))
    assert report["options"]["mode"] == "lines" and report["options"]["text_column"] == "line"
    assert report["options"]["condition_column"] == "mood" and report["results"][0]["examples"] == 10
