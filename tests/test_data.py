"""Tests for ktos.data: every loader format, every validation error, prepare and split."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import json
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ktos.data import DataValidationError, load_feedback, read_dataset_dir, write_dataset_dir
from ktos.data_stages import prepare, split

ROWS: list[dict[str, Any]] = [
    {"prompt": "2+2=", "completion": "4", "label": True},
    {"prompt": "3+3=", "completion": "6", "label": True},
    {"prompt": "1+1=", "completion": "3", "label": False},
    {"prompt": "5+1=", "completion": "6", "label": True},
    {"prompt": "7+1=", "completion": "9", "label": False},
]
EXPECTED = {
    "prompt": [r["prompt"] for r in ROWS],
    "completion": [r["completion"] for r in ROWS],
    "label": [r["label"] for r in ROWS],
}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def assert_kto(ds: datasets.Dataset, expected: dict[str, list[Any]] = EXPECTED) -> None:
    assert ds.column_names == ["prompt", "completion", "label"]
    assert ds.to_dict() == expected
    assert all(type(v) is bool for v in ds["label"])


def error_of(source: Path | str) -> str:
    with pytest.raises(DataValidationError) as info:
        load_feedback(str(source))
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------- formats


def test_jsonl(tmp_path: Path) -> None:
    assert_kto(load_feedback(str(write_jsonl(tmp_path / "d.jsonl", ROWS))))


def test_json_array_and_json_lines(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(ROWS), encoding="utf-8")
    assert_kto(load_feedback(str(tmp_path / "a.json")))
    assert_kto(load_feedback(str(write_jsonl(tmp_path / "l.json", ROWS))))


def test_csv_label_words_and_digits(tmp_path: Path) -> None:
    words = {True: ["True", "1", "true", "TRUE"], False: ["false", "0", "False", "0"]}
    lines = ["prompt,completion,label"]
    for i, r in enumerate(ROWS):
        lines.append(f'"{r["prompt"]}","{r["completion"]}",{words[r["label"]][i % 2]}')
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert_kto(load_feedback(str(tmp_path / "d.csv")))


def test_tsv(tmp_path: Path) -> None:
    lines = ["prompt\tcompletion\tlabel"] + [f"{r['prompt']}\t{r['completion']}\t{int(r['label'])}" for r in ROWS]
    (tmp_path / "d.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert_kto(load_feedback(str(tmp_path / "d.tsv")))


def test_csv_text_na_is_text(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("prompt,completion,label\nNA,None,1\nnull,x,0\n", encoding="utf-8")
    ds = load_feedback(str(tmp_path / "d.csv"))
    assert ds["prompt"] == ["NA", "null"] and ds["completion"] == ["None", "x"]


def test_parquet(tmp_path: Path) -> None:
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "d.parquet")
    assert_kto(load_feedback(str(tmp_path / "d.parquet")))


def test_save_to_disk_dataset_and_dict(tmp_path: Path) -> None:
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "single"))
    assert_kto(load_feedback(str(tmp_path / "single")))
    other = [dict(r, prompt="x" + r["prompt"]) for r in ROWS]
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(other), "test": datasets.Dataset.from_list(ROWS)})
    dd.save_to_disk(str(tmp_path / "dict"))
    assert_kto(load_feedback(str(tmp_path / "dict"), split="test"))
    assert load_feedback(str(tmp_path / "dict"))["prompt"] == [r["prompt"] for r in other]
    with pytest.raises(DataValidationError, match=r"no split 'validation' \(splits: 'train', 'test'\)"):
        load_feedback(str(tmp_path / "dict"), split="validation")


def test_dataset_dir_round_trip(tmp_path: Path) -> None:
    manifest = write_dataset_dir(datasets.Dataset.from_list(ROWS), tmp_path / "dd", note="x")
    assert manifest["rows"] == 5 and manifest["desirable"] == 3 and manifest["undesirable"] == 2
    assert manifest["note"] == "x"
    assert json.loads((tmp_path / "dd" / "manifest.json").read_text()) == manifest
    assert_kto(read_dataset_dir(tmp_path / "dd"))
    assert_kto(load_feedback(str(tmp_path / "dd")))


def test_dataset_dir_sha_mismatch(tmp_path: Path) -> None:
    write_dataset_dir(datasets.Dataset.from_list(ROWS), tmp_path / "dd")
    with (tmp_path / "dd" / "data.jsonl").open("a") as fh:
        fh.write(json.dumps(ROWS[0]) + "\n")
    assert "sha256 differs" in error_of(tmp_path / "dd")


def test_int_labels_become_bool(tmp_path: Path) -> None:
    rows = [dict(r, label=int(r["label"])) for r in ROWS]
    assert_kto(load_feedback(str(write_jsonl(tmp_path / "d.jsonl", rows))))


def test_extra_columns_dropped(tmp_path: Path) -> None:
    rows = [dict(r, id=i) for i, r in enumerate(ROWS)]
    assert_kto(load_feedback(str(write_jsonl(tmp_path / "d.jsonl", rows))))


def test_conversational_kept_as_messages(tmp_path: Path) -> None:
    rows = [
        {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "completion": [{"role": "assistant", "content": r["completion"]}],
            "label": r["label"],
        }
        for r in ROWS
    ]
    ds = load_feedback(str(write_jsonl(tmp_path / "c.jsonl", rows)))
    assert ds.to_list() == rows
    write_dataset_dir(ds, tmp_path / "dd")
    assert read_dataset_dir(tmp_path / "dd").to_list() == rows


def test_conversational_empty_content(tmp_path: Path) -> None:
    rows = [
        {
            "prompt": [{"role": "user", "content": "hi"}],
            "completion": [{"role": "assistant", "content": "ok"}],
            "label": True,
        },
        {
            "prompt": [{"role": "user", "content": "hi"}],
            "completion": [{"role": "assistant", "content": " "}],
            "label": False,
        },
        {"prompt": [], "completion": [{"role": "assistant", "content": "x"}], "label": False},
    ]
    message = error_of(write_jsonl(tmp_path / "c.jsonl", rows))
    assert "column 'prompt'" in message and "rows [2]" in message
    rows[2]["prompt"] = [{"role": "user", "content": "q"}]
    message = error_of(write_jsonl(tmp_path / "c.jsonl", rows))
    assert "column 'completion'" in message and "rows [1]" in message


def test_paired_unpaired(tmp_path: Path) -> None:
    pairs = [
        {"prompt": "2+2=", "chosen": "4", "rejected": "5"},
        {"prompt": "1+2=", "chosen": "3", "rejected": "4"},
    ]
    ds = load_feedback(str(write_jsonl(tmp_path / "p.jsonl", pairs)))
    assert ds.to_dict() == {
        "prompt": ["2+2=", "2+2=", "1+2=", "1+2="],
        "completion": ["4", "5", "3", "4"],
        "label": [True, False, True, False],
    }


def test_paired_errors_name_paired_rows(tmp_path: Path) -> None:
    pairs = [{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a", "chosen": "b", "rejected": ""}]
    message = error_of(write_jsonl(tmp_path / "p.jsonl", pairs))
    assert "column 'rejected'" in message and "rows [1]" in message
    message = error_of(write_jsonl(tmp_path / "q.jsonl", [{"chosen": "b", "rejected": "c"}]))
    assert "missing column 'prompt'" in message


# ---------------------------------------------------------------------------- errors


def test_missing_column_named_with_present_ones(tmp_path: Path) -> None:
    rows = [{"prompt": r["prompt"], "label": r["label"]} for r in ROWS]
    message = error_of(write_jsonl(tmp_path / "d.jsonl", rows))
    assert message == f"{tmp_path / 'd.jsonl'}: missing column 'completion' (columns present: 'prompt', 'label')"


@pytest.mark.parametrize("column", ["prompt", "completion"])
def test_empty_or_null_text(tmp_path: Path, column: str) -> None:
    rows = [dict(r) for r in ROWS]
    rows[1][column] = ""
    rows[3][column] = None
    rows[4][column] = "   "
    message = error_of(write_jsonl(tmp_path / "d.jsonl", rows))
    assert (
        message == f"{tmp_path / 'd.jsonl'}: column {column!r}: empty, null or non-text values at rows [1, 3, 4]: "
        "'', None, '   '"
    )


def test_key_missing_in_some_rows_is_null(tmp_path: Path) -> None:
    rows = [dict(r) for r in ROWS]
    del rows[2]["completion"]
    assert "column 'completion': empty, null or non-text values at rows [2]: None" in error_of(
        write_jsonl(tmp_path / "d.jsonl", rows)
    )


def test_bad_labels_rows_and_values(tmp_path: Path) -> None:
    rows = [dict(r) for r in ROWS] + [dict(ROWS[0]) for _ in range(3)]
    for i, bad in zip((1, 2, 4, 5, 6, 7), (2, "yes", None, 1.5, -1, "1"), strict=True):
        rows[i]["label"] = bad
    message = error_of(write_jsonl(tmp_path / "d.jsonl", rows))
    assert message == (
        f"{tmp_path / 'd.jsonl'}: column 'label': values that are not bool or 0/1 at rows [1, 2, 4, 5, 6] "
        "(and 1 more): 2, 'yes', None, 1.5, -1"
    )


def test_bad_csv_label(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("prompt,completion,label\na,b,1\nc,d,yes\ne,f,2\n", encoding="utf-8")
    assert "column 'label': values that are not bool or 0/1 at rows [1, 2]: 'yes', '2'" in error_of(tmp_path / "d.csv")


def test_parquet_float_labels_0_and_1_accepted_as_trl_accepts_them(tmp_path: Path) -> None:
    table = {"prompt": ["a", "b", "e"], "completion": ["c", "d", "f"], "label": [1.0, 0.0, 0.5]}
    pq.write_table(pa.table(table), tmp_path / "d.parquet")
    assert "values that are not bool or 0/1 at rows [2]: 0.5" in error_of(tmp_path / "d.parquet")
    pq.write_table(pa.table({k: v[:2] for k, v in table.items()}), tmp_path / "d.parquet")
    assert load_feedback(str(tmp_path / "d.parquet"))["label"] == [True, False]


def test_empty_dataset(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text("", encoding="utf-8")
    assert error_of(tmp_path / "d.jsonl") == f"{tmp_path / 'd.jsonl'}: no rows"
    (tmp_path / "d.csv").write_text("prompt,completion,label\n", encoding="utf-8")
    assert error_of(tmp_path / "d.csv").endswith(": no rows")
    (tmp_path / "d.csv").write_text("", encoding="utf-8")
    assert error_of(tmp_path / "d.csv").endswith(": no rows")


@pytest.mark.parametrize("label,present", [(True, "desirable (True)"), (False, "undesirable (False)")])
def test_one_label_only(tmp_path: Path, label: bool, present: str) -> None:
    rows = [dict(r, label=label) for r in ROWS]
    message = error_of(write_jsonl(tmp_path / "d.jsonl", rows))
    assert f"column 'label': all 5 rows are {present}, none" in message and "both labels" in message


def test_invalid_json_line(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text(json.dumps(ROWS[0]) + "\n{oops\n", encoding="utf-8")
    assert "invalid JSON at line 2" in error_of(tmp_path / "d.jsonl")
    (tmp_path / "d.jsonl").write_text(json.dumps(ROWS[0]) + "\n[1, 2]\n", encoding="utf-8")
    assert error_of(tmp_path / "d.jsonl").endswith("rows [1] are not JSON objects: [1, 2]")


def test_missing_path_and_unknown_suffix(tmp_path: Path) -> None:
    assert error_of(tmp_path / "nope.jsonl").endswith("no such file or directory")
    (tmp_path / "d.txt").write_text("x", encoding="utf-8")
    assert "unsupported file type '.txt'" in error_of(tmp_path / "d.txt")
    (tmp_path / "empty_dir").mkdir()
    assert "not a dataset dir" in error_of(tmp_path / "empty_dir")


def test_hub_id_offline_is_a_clear_error() -> None:
    message = error_of("ktos-test-org/no-such-dataset")
    assert message.startswith("hub dataset 'ktos-test-org/no-such-dataset' (split 'train'): could not load")


# ---------------------------------------------------------------------------- prepare


def test_prepare_writes_dataset_dir(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [dict(r, label=int(r["label"])) for r in ROWS])
    manifest = prepare(str(src), tmp_path / "out")
    assert {k: manifest[k] for k in ("rows", "desirable", "undesirable")} == {
        "rows": 5,
        "desirable": 3,
        "undesirable": 2,
    }
    assert manifest["source"] == str(src) and manifest["format"] == "json" and manifest["split"] is None
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == manifest
    lines = (tmp_path / "out" / "data.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == ROWS
    assert_kto(read_dataset_dir(tmp_path / "out"))


def test_prepare_rejects_bad_data(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [dict(r, label=True) for r in ROWS])
    with pytest.raises(DataValidationError):
        prepare(str(src), tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- split


def make_dir(path: Path, n_desirable: int, n_undesirable: int) -> Path:
    labels = [True] * n_desirable + [False] * n_undesirable
    rows = [{"prompt": f"q{i}", "completion": f"a{i}", "label": v} for i, v in enumerate(labels)]
    rows = rows[::3] + rows[1::3] + rows[2::3]  # mix the labels a little
    write_dataset_dir(datasets.Dataset.from_list(rows), path)
    return path


def test_split_stratified(tmp_path: Path) -> None:
    src = make_dir(tmp_path / "in", 746, 254)
    manifest = split(src, tmp_path / "out", eval_fraction=0.1, seed=0)
    assert manifest["eval"]["desirable"] == 75 and manifest["eval"]["undesirable"] == 25
    assert manifest["train"]["desirable"] == 671 and manifest["train"]["undesirable"] == 229
    train, evalset = read_dataset_dir(tmp_path / "out" / "train"), read_dataset_dir(tmp_path / "out" / "eval")
    assert len(train) == 900 and len(evalset) == 100
    assert not set(train["prompt"]) & set(evalset["prompt"])
    assert sorted(list(train["prompt"]) + list(evalset["prompt"])) == sorted(read_dataset_dir(src)["prompt"])
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == manifest
    for name in ("train", "eval"):
        assert manifest[name]["sha256"] == json.loads((tmp_path / "out" / name / "manifest.json").read_text())["sha256"]


def test_split_keeps_input_order(tmp_path: Path) -> None:
    src = make_dir(tmp_path / "in", 40, 20)
    split(src, tmp_path / "out", eval_fraction=0.25)
    order = {p: i for i, p in enumerate(read_dataset_dir(src)["prompt"])}
    for name in ("train", "eval"):
        idx = [order[p] for p in read_dataset_dir(tmp_path / "out" / name)["prompt"]]
        assert idx == sorted(idx)


def test_split_deterministic(tmp_path: Path) -> None:
    src = make_dir(tmp_path / "in", 60, 20)

    def files(out: Path) -> dict[str, bytes]:
        return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    split(src, tmp_path / "a", seed=3)
    split(src, tmp_path / "b", seed=3)
    split(src, tmp_path / "c", seed=4)
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert len(files(tmp_path / "a")) == 5
    assert (tmp_path / "a" / "eval" / "data.jsonl").read_bytes() != (
        tmp_path / "c" / "eval" / "data.jsonl"
    ).read_bytes()


def test_split_small_labels(tmp_path: Path) -> None:
    src = make_dir(tmp_path / "in", 20, 2)
    manifest = split(src, tmp_path / "out", eval_fraction=0.1)
    assert manifest["eval"]["undesirable"] == 1 and manifest["train"]["undesirable"] == 1
    assert manifest["eval"]["desirable"] == 2
    src = make_dir(tmp_path / "in1", 20, 1)
    manifest = split(src, tmp_path / "out1", eval_fraction=0.1)
    assert manifest["eval"]["undesirable"] == 0 and manifest["train"]["undesirable"] == 1


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_bad_fraction(tmp_path: Path, fraction: float) -> None:
    with pytest.raises(ValueError, match="eval_fraction"):
        split(make_dir(tmp_path / "in", 4, 4), tmp_path / "out", eval_fraction=fraction)
