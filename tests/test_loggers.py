import csv

from nlpseq.loggers import CSVLogger


def _rows(path):
    return list(csv.DictReader(open(path, newline="")))


def test_csv_logger_appends_on_resume_and_keeps_every_column(tmp_path):
    first = CSVLogger(save_dir=tmp_path, name="logs", version="")
    first.log_metrics({"train/loss": 1.0}, step=1)
    first.log_metrics({"val/f1": 0.5}, step=2)
    first.save()
    resumed = CSVLogger(save_dir=tmp_path, name="logs", version="")  # a second start of the same run
    resumed.log_metrics({"train/loss": 0.5}, step=3)
    resumed.log_metrics({"test/f1": 0.7}, step=4)  # a column the first start never wrote
    resumed.save()
    rows = _rows(tmp_path / "logs" / "metrics.csv")
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[1]["val/f1"] == "0.5" and rows[3]["test/f1"] == "0.7" and rows[0]["test/f1"] == ""
