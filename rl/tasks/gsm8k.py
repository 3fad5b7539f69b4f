"""GSM8K-style word problems from JSONL: `{"prompt"|"question": str, "answer"|"solution": str|number}`.

`prompt` may instead be a conversation (TRL's conversational format: `[{"role": "system", "content": ...},
{"role": "user", "content": ...}]`): it is the prompt as written, rendered with the model's chat template
(`JsonlTask.use_tokenizer`), with no instruction added, so its messages say how to answer (the format reward
wants `<think>` and `<answer>` tags).

The gold answer is the text after the last `####` when present (GSM8K's convention), else the whole field; it
must parse as a number (`rl.rewards.parse_number`: thousands commas, fractions, `\\frac`, ...), otherwise the
reader raises InputError naming the file and line. Completions are compared numerically (`accuracy_reward`).
Pure Python + numpy; imports the engine only to raise its InputError.
"""

from __future__ import annotations

from wgrpo.rl.errors import input_error
from wgrpo.rl.rewards import accuracy_reward, parse_number
from wgrpo.rl.tasks.base import JsonlTask, Problem, Record, is_conversation, record_field

__all__ = ["Gsm8kTask", "final_answer", "QUESTION_FIELDS", "ANSWER_FIELDS"]

QUESTION_FIELDS = ("prompt", "question")
ANSWER_FIELDS = ("answer", "solution")


def final_answer(solution) -> str:
    """The final answer text of a GSM8K solution: after the last `####`, stripped (a number is str-ed)."""
    if isinstance(solution, (int, float)):
        return repr(solution) if isinstance(solution, float) else str(solution)
    text = solution.rsplit("####", 1)[-1] if "####" in solution else solution
    return text.strip()


class Gsm8kTask(JsonlTask):
    """options: path, eval_path, eval_fraction, think_prefix, template."""

    name = "gsm8k"
    records = 'word problems, one {"question": ..., "answer": "... #### <number>"} object per line'

    def _parse(self, record: Record) -> tuple[str | tuple[dict, ...], str, dict]:
        conversational = is_conversation(record.data.get("prompt"))
        question = self.conversation(record, "prompt") if conversational else \
            record_field(record, QUESTION_FIELDS, kind="question")
        solution = record_field(record, ANSWER_FIELDS, kind="answer", types=(str, int, float))
        answer = final_answer(solution)
        if parse_number(answer) is None:
            raise input_error(f"{record.where()}: answer {answer!r} is not a number "
                             f"(the gsm8k task compares numbers; the final answer follows '####')")
        if conversational:
            return question, answer, {}
        question = (f"{question.strip()}\nShow your reasoning in <think> </think> tags and give the final answer "
                    f"as a number in <answer> </answer> tags.")
        return question, answer, {}

    def _accuracy(self, text: str, problem: Problem) -> float:
        return accuracy_reward(text, problem.answer)
