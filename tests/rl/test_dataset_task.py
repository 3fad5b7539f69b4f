"""DatasetTask: rows as problems, TRL's prompt handling, reward functions called in TRL's convention (the sync ones in
the calling thread, `rewards_pending` returning before the async ones finish); through a rollout and the evaluation
on a tiny model."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from wgrpo.engine import InputError
from wgrpo.rl.datasets import load_rows
from wgrpo.rl.reward_funcs import accuracy, format
from wgrpo.rl.reward_scoring import RewardFunctions
from wgrpo.rl.rollout import sample_and_score
from wgrpo.rl.tasks import DatasetTask, TASKS
from wgrpo.rl.train.evaluate import evaluate
from tests.rl.test_tasks import CHATML, HEADERS, chat_tokenizer

CHAT = [{"role": "system", "content": "Answer in <answer> tags."}, {"role": "user", "content": "Tom has 3 apples."}]
TEXT_ROWS = [{"prompt": "What is 1 + 1?\n<think>", "answer": "2", "level": 1},
             {"prompt": "What is 2 + 2?", "answer": "4"},
             {"prompt": "Name a colour.", "answer": None, "level": 3}]


def calls(log):
    """A reward function that records what it is given: 1.0 for a completion holding the row's `level`."""
    def recorder(prompts, completions, completion_ids, level, trainer_state, **kwargs):
        log.append(dict(prompts=prompts, completions=completions, completion_ids=completion_ids, level=level,
                        trainer_state=trainer_state, **kwargs))
        return [None if lv is None else float(str(lv) in str(c)) for lv, c in zip(level, completions)]
    return recorder


def test_text_prompts_are_used_as_written_in_order():
    task = DatasetTask(load_rows(TEXT_ROWS, "train_dataset"), [accuracy, format])
    assert "dataset" not in TASKS and task.name == "dataset" and task.stop_strings == ()
    assert [task.sample(i).prompt for i in range(4)] == [r["prompt"] for r in TEXT_ROWS] + [TEXT_ROWS[0]["prompt"]]
    first = task.sample(0)
    assert first.meta == {"source": "train_dataset[0]", "columns": {"answer": "2", "level": 1}}
    assert task.sample(1).meta["columns"] == {"answer": "4", "level": None}  # a missing column is None
    assert first.think_in_prompt and not task.sample(1).think_in_prompt
    assert task.size("train") == 3 and task.size("eval") == 0
    with pytest.raises(InputError, match="has no eval rows"):
        task.sample(0, "eval")
    assert task.reward_names == ("accuracy", "format") and task.primary_reward == "accuracy"
    assert task.default_weights == {"accuracy": 1.0, "format": 1.0}
    rng = np.random.default_rng(0)
    assert {task.sample(rng).id for _ in range(30)} == {f"train_dataset[{i}]" for i in range(3)}


def test_rewards_call_each_function_once_per_batch_with_the_columns():
    log = []
    task = DatasetTask(load_rows(TEXT_ROWS, "train_dataset"), RewardFunctions([accuracy, calls(log)], [1.0, 0.5]))
    problems = [task.sample(i) for i in (0, 0, 1, 2)]
    completions = ["so </think> <answer>2</answer> 1", "<answer>3</answer>", "<answer>4</answer>", "3 blue"]
    task.trainer_state = state = object()
    scores = task.rewards(completions, problems, completion_ids=[[1], [2], [3], [4]])
    [seen] = log
    assert seen["prompts"] == [TEXT_ROWS[0]["prompt"]] * 2 + [TEXT_ROWS[1]["prompt"], TEXT_ROWS[2]["prompt"]]
    assert seen["completions"] == completions and seen["completion_ids"] == [[1], [2], [3], [4]]
    assert seen["level"] == [1, 1, None, 3] and seen["answer"] == ["2", "2", "4", None]
    assert seen["trainer_state"] is state
    assert [total for total, _ in scores] == [1.5, 0.0, 1.0, 0.5]
    assert scores[0][1] == {"accuracy": 1.0, "recorder": 1.0}
    assert np.isnan(scores[2][1]["recorder"]) and np.isnan(scores[3][1]["accuracy"])
    # weights by name, as the trainer gives them
    assert [total for total, _ in task.rewards(completions, problems, {"recorder": 2.0})] == [2.0, 0.0, 0.0, 2.0]
    assert task.reward(completions[0], problems[0]) == scores[0]


def test_the_functions_signatures_are_checked_when_the_task_is_built(tmp_path):
    def needs_tests(prompts, completions, tests, **kwargs):
        return [0.0] * len(completions)

    with pytest.raises(InputError, match=r"^reward function needs_tests needs argument 'tests', which no column of "
                                         r"train_dataset provides; its columns: answer, level "):
        DatasetTask(load_rows(TEXT_ROWS, "train_dataset"), [needs_tests])
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "q", "answer": "1"}\n')
    with pytest.raises(InputError, match=rf"which no column of {path} provides; its columns: answer "):
        DatasetTask(load_rows(path, "train_dataset"), [needs_tests])
    eval_rows = load_rows([{"prompt": "held out", "tests": ["assert 1"]}], "eval_dataset")
    task = DatasetTask(load_rows(TEXT_ROWS, "train_dataset"), [needs_tests], eval_rows)  # eval rows add columns
    assert task.columns == ["answer", "level", "tests"] and task.sample(0, "eval").meta["source"] == "eval_dataset[0]"


def test_conversations_reach_the_functions_and_use_the_chat_template():
    log = []
    rows = [{"prompt": CHAT, "level": 3}, {"prompt": "Plain text prompt.", "level": 1}]
    task = DatasetTask(load_rows(rows, "train_dataset"), [calls(log), format],
                       load_rows([{"prompt": CHAT[1:], "level": 2}], "eval_dataset"))
    with pytest.raises(RuntimeError, match="use_tokenizer"):
        task.sample(0)
    with pytest.raises(InputError, match=r"^train_dataset\[0\]: the prompt is a conversation .* no chat_template"):
        task.use_tokenizer(chat_tokenizer(None))
    tokenizer = chat_tokenizer(CHATML)
    task.use_tokenizer(tokenizer)
    chat, text, held = task.sample(0), task.sample(1), task.sample(0, "eval")
    assert chat.prompt == ("<|im_start|>system\nAnswer in <answer> tags.<|im_end|>\n<|im_start|>user\nTom has 3 "
                           "apples.<|im_end|>\n<|im_start|>assistant\n")  # no <think> added, as TRL
    assert chat.prompt == tokenizer.apply_chat_template(CHAT, add_generation_prompt=True)
    assert held.prompt == tokenizer.apply_chat_template(CHAT[1:], add_generation_prompt=True)
    assert text.prompt == "Plain text prompt." and not chat.think_in_prompt
    scores = task.rewards(["<think>3 apples</think> <answer>3</answer>", "no"], [chat, text])
    [seen] = log
    assert seen["prompts"] == [CHAT, "Plain text prompt."]
    assert seen["completions"] == [[{"role": "assistant", "content": "<think>3 apples</think> <answer>3</answer>"}],
                                   "no"]
    assert [parts for _, parts in scores] == [{"recorder": 1.0, "format": 1.0}, {"recorder": 0.0, "format": 0.0}]
    assert [where for where, _ in task._prompts_to_check()] == ["train_dataset[0]", "train_dataset[1]",
                                                                 "eval_dataset[0]"]
    with pytest.raises(InputError, match=r"^train_dataset\[0\]: prompt is \d+ characters"):
        task.check_prompts(tokenizer, 10)
    task.use_tokenizer(chat_tokenizer(HEADERS, bos=True))  # rendered anew, without a doubled <|begin_of_text|>
    assert task.sample(0).prompt.startswith("<|start_header_id|>system")


# ----------------------------------------------------------------------------------------------- on a model

def tiny_model(device, tokenizer):
    from wgrpo.engine import Model, ModelConfig

    eos = tokenizer.token_to_id("<|im_end|>")
    config = ModelConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_layers=1, num_heads=4,
                         num_kv_heads=2, intermediate_size=48, max_position_embeddings=96, eos_token_id=eos,
                         pad_token_id=eos)
    return Model.random(config, seed=0, device=device)


def test_a_rollout_and_an_evaluation_of_a_dataset_task(device):
    log = []
    rows = [{"prompt": CHAT, "level": 3}, {"prompt": "Tom has 3 apples. How many?", "level": 1}]
    task = DatasetTask(load_rows(rows, "train_dataset"), RewardFunctions([calls(log), format], [1.0, 0.5]),
                       load_rows(rows[::-1] + [{"prompt": "How many?", "level": None}], "eval_dataset"))
    tokenizer = chat_tokenizer(CHATML)
    task.use_tokenizer(tokenizer)
    model = tiny_model(device, tokenizer)
    task.trainer_state = "state"
    problems = [task.sample(i) for i in range(2)]
    kwargs = dict(max_new_tokens=12, temperature=1.0, top_k=0, top_p=1.0, seed=0, weights=task.default_weights)
    rollout = sample_and_score(model, tokenizer, task, problems, 3, **kwargs)
    assert all(c.finish_reason in ("eos", "length") for c in rollout.completions)  # no stop strings
    [seen] = log
    assert seen["completion_ids"] == [c.token_ids for c in rollout.completions]
    assert seen["prompts"][:3] == [CHAT] * 3 and seen["completions"][0] == [{"role": "assistant",
                                                                              "content": rollout.completions[0].text}]
    assert seen["level"] == [3, 3, 3, 1, 1, 1] and seen["trainer_state"] == "state"
    chunked = sample_and_score(model, tokenizer, task, problems, 3, generation_batch_size=3, **kwargs)
    assert [(c.reward, c.parts) for c in chunked.completions] == [(c.reward, c.parts) for c in rollout.completions]
    assert len(log) == 3  # the chunks, scored one call each

    result = evaluate(model, tokenizer, task, problems=10, max_new_tokens=8)
    assert result.problems == 3 and np.isnan(result.accuracy) and result.format == 0.0
    assert list(result.rewards) == ["recorder", "format"]
    levels = [1, 3, None]
    texts = [c for c in log[-1]["completions"]]
    expected = [float(str(lv) in (t if isinstance(t, str) else t[0]["content"])) for lv, t in zip(levels, texts)
                if lv is not None]
    assert result.rewards["recorder"] == pytest.approx(np.mean(expected))  # the None is left out
    assert result.pass_at_1 == pytest.approx(sum(expected) / 3)  # a None is not full marks
    assert set(result.as_metrics()) == {"eval_reward", "eval_pass@1", "eval_completions/mean_length",
                                        "eval_rewards/recorder/mean", "eval_rewards/format/mean"}
    weighted = evaluate(model, tokenizer, task, problems=10, max_new_tokens=8, weights={"recorder": 2.0})
    assert weighted.reward == pytest.approx(2 * sum(expected) / 3)


def test_the_evaluation_of_a_rule_task(device):
    from tests.rl.test_rollout import Distinct, tiny_model as rule_model

    task = Distinct()
    model, tokenizer = rule_model(device, [task.sample(i) for i in range(4)])
    result = evaluate(model, tokenizer, task, problems=4, max_new_tokens=6)
    assert list(result.rewards) == ["format", "accuracy"]
    assert result.accuracy == result.rewards["accuracy"] and result.format == result.rewards["format"]
    assert 0.0 < result.accuracy < 1.0 and result.pass_at_1 == 0.0  # Distinct's accuracy never reaches 1
    assert result.reward == pytest.approx(result.accuracy + 0.1 * result.format)
    assert result.as_metrics() == {"eval_reward": result.reward, "eval_pass@1": 0.0,
                                   "eval_completions/mean_length": result.mean_length,
                                   "eval_rewards/format/mean": result.format,
                                   "eval_rewards/accuracy/mean": result.accuracy}


def test_prompts_must_fit_the_model_and_max_prompt_length():
    from wgrpo.engine import ModelConfig
    from wgrpo.rl.train.evaluate import check_prompts_fit

    rows = [{"prompt": "short"}, {"prompt": "a much longer prompt " * 8}]
    task = DatasetTask(load_rows(rows, "train_dataset"), [format])
    tokenizer = chat_tokenizer(None)
    config = ModelConfig(vocab_size=320, hidden_size=32, num_layers=1, num_heads=4, num_kv_heads=2,
                         intermediate_size=48, max_position_embeddings=512)
    longest = check_prompts_fit(task, tokenizer, config, 64)
    assert longest == len(tokenizer.encode(rows[1]["prompt"]).ids)
    assert check_prompts_fit(task, tokenizer, config, 64, max_prompt_length=longest) == longest
    with pytest.raises(InputError, match=rf"^train_dataset\[1\]: prompt is .* over the limit of {longest - 1} tokens "
                                         rf"\(--max-prompt-length {longest - 1}\)"):
        check_prompts_fit(task, tokenizer, config, 64, max_prompt_length=longest - 1)
    with pytest.raises(InputError, match=r"\(the model's max_position_embeddings=512 minus --max-new-tokens 500\)"):
        check_prompts_fit(task, tokenizer, config, 500, max_prompt_length=100)


def test_rewards_pending_returns_once_the_synchronous_functions_ran():
    released, ran = threading.Event(), []

    async def judge(prompts, completions, answer, **kwargs):
        if not await asyncio.to_thread(released.wait, 10):
            raise TimeoutError("rewards_pending waited for the async function")
        return [None if a is None else 0.5 for a in answer]

    def main_thread_only(prompts, completions, **kwargs):
        ran.append(threading.current_thread() is threading.main_thread())
        return [1.0] * len(completions)

    task = DatasetTask(load_rows(TEXT_ROWS, "train_dataset"), RewardFunctions([judge, main_thread_only], [2.0, 1.0]))
    problems = [task.sample(i) for i in range(3)]
    pending = task.rewards_pending(["a", "b", "c"], problems, {"judge": 4.0, "main_thread_only": 1.0})
    assert ran == [True] and not pending.done()
    released.set()
    scores = pending.result()
    assert pending.done() and [total for total, _ in scores] == [3.0, 3.0, 1.0]
    assert scores[0][1] == {"judge": 0.5, "main_thread_only": 1.0} and np.isnan(scores[2][1]["judge"])
    again = task.rewards(["a", "b", "c"], problems)  # the same event loop serves the next batch
    assert [total for total, _ in again] == [2.0, 2.0, 1.0] and ran == [True, True]
    with pytest.raises(ValueError, match="dataset.rewards: 2 completions but 3 problems"):
        task.rewards_pending(["a", "b"], problems)
    task.reward_functions.close()
