"""load_rows: lists of dicts, JSONL files and datasets.Dataset, every row's prompt checked, errors naming the row."""

from __future__ import annotations

import json

import pytest

from wgrpo.engine import InputError
from wgrpo.rl.datasets import Row, columns, load_rows

CHAT = [{"role": "system", "content": "Answer in <answer> tags."}, {"role": "user", "content": "What is 2 + 2?"}]
ROWS = [
    {"prompt": "What is 1 + 1?\n<think>", "answer": "2"},
    {"prompt": CHAT, "answer": 4, "level": "easy"},
    {"prompt": "Name a prime.", "level": None, "tests": ["assert True"]},
]


def test_a_list_of_dicts():
    rows = load_rows(ROWS, "train_dataset")
    assert [row.where for row in rows] == ["train_dataset[0]", "train_dataset[1]", "train_dataset[2]"]
    assert rows[0] == Row("train_dataset[0]", ROWS[0]) and not rows[0].is_conversation()
    assert rows[1].data["prompt"] == CHAT and rows[1].is_conversation()
    assert rows[1].data["prompt"][0] is not CHAT[0]  # fresh messages: the caller's list is never shared
    assert columns(rows) == ["answer", "level", "tests"]
    assert [row.data.get("tests") for row in rows] == [None, None, ["assert True"]]
    assert load_rows(tuple(ROWS), "rows")[2].where == "rows[2]"


def test_a_jsonl_file(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\n")
    for given in (path, str(path)):
        rows = load_rows(given, "train_dataset")
        assert [row.where for row in rows] == [f"{path}:1", f"{path}:3"]
        assert rows[1].data == {"prompt": CHAT, "answer": 4, "level": "easy"}
    with pytest.raises(InputError, match="does not exist"):
        load_rows(tmp_path / "none.jsonl", "train_dataset")
    path.write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(InputError, match=rf"^{path}:1: no 'prompt' \(every row needs one: text, or a conversation"):
        load_rows(path, "train_dataset")


@pytest.mark.parametrize("rows,message", [
    ([], r"^train_dataset is empty: it needs at least one row with a 'prompt'$"),
    ([ROWS[0], "What is 3 + 3?"], r"^train_dataset\[1\]: expected a dict with a 'prompt', got str$"),
    ([{"question": "q", "answer": "1"}], r"^train_dataset\[0\]: no 'prompt' .*; its fields: 'question', 'answer'$"),
    ([{"prompt": "  \n"}], r"^train_dataset\[0\]: 'prompt' is blank$"),
    ([{"prompt": 7}], r"^train_dataset\[0\]: 'prompt' must be text, or a conversation: .*, got int$"),
    ([{"prompt": []}], r"^train_dataset\[0\]: field 'prompt' must be text or .*, got an empty list$"),
    ([{"prompt": [{"role": "user"}]}], r"^train_dataset\[0\]: prompt\[0\]: no 'content'$"),
    ([{"prompt": CHAT + [{"role": "assistant", "content": "4"}]}],
     r"^train_dataset\[0\]: the conversation in 'prompt' ends with an assistant message"),
])
def test_bad_rows_are_named(rows, message):
    with pytest.raises(InputError, match=message):
        load_rows(rows, "train_dataset")


def test_other_objects_are_refused():
    with pytest.raises(InputError, match="^train_dataset: expected a list of dicts, a JSONL file path or a "
                                         "datasets.Dataset, got dict$"):
        load_rows({"prompt": "q"}, "train_dataset")


def test_a_datasets_dataset():
    datasets = pytest.importorskip("datasets")
    dataset = datasets.Dataset.from_list([{"prompt": CHAT, "answer": "4"}, {"prompt": CHAT[1:], "answer": "5"}])
    rows = load_rows(dataset, "train_dataset")
    assert [row.where for row in rows] == ["train_dataset[0]", "train_dataset[1]"]
    assert rows[1].data == {"prompt": CHAT[1:], "answer": "5"} and columns(rows) == ["answer"]
    text = datasets.Dataset.from_dict({"prompt": ["a", "b"], "solution": ["1", "2"]})
    assert [row.data for row in load_rows(text, "eval_dataset")] == [{"prompt": "a", "solution": "1"},
                                                                     {"prompt": "b", "solution": "2"}]
    splits = datasets.DatasetDict({"train": text, "test": text})
    with pytest.raises(InputError, match=r"^train_dataset holds several splits \(DatasetDict: train, test\); pass one "
                                         r"split, e\.g\. train_dataset=dataset\['train'\]$"):
        load_rows(splits, "train_dataset")
    with pytest.raises(InputError, match=r"^train_dataset is a streamed dataset \(IterableDataset\); pass a "
                                         r"datasets\.Dataset"):
        load_rows(text.to_iterable_dataset(), "train_dataset")
    with pytest.raises(InputError, match=r"^train_dataset has no 'prompt' column; its columns: question, solution"):
        load_rows(text.rename_column("prompt", "question"), "train_dataset")
    with pytest.raises(InputError, match=r"^train_dataset\[1\]: 'prompt' is blank$"):
        load_rows(datasets.Dataset.from_dict({"prompt": ["a", " "]}), "train_dataset")


def test_no_engine_or_wgpu_import():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, wgrpo.rl.datasets, wgrpo.rl.reward_funcs, wgrpo.rl.reward_scoring, wgrpo.rl.tasks.dataset\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('wgpu', 'datasets') or m.startswith(('wgrpo.engine', "
            "'wgrpo.kernels'))]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(Path(__file__).parents[2]))
