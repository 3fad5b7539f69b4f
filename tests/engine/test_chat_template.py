"""Chat templates against transformers: tokenizers saved by transformers' save_pretrained (a Qwen2.5-style ChatML
template, a Llama-3-style one with bos_token and dates, named templates; in tokenizer_config.json and in .jinja
files) load with `load_tokenizer` and render the same text and ids as `AutoTokenizer.apply_chat_template`; the
files `write_checkpoint` writes back load in transformers with the same template and output."""

from __future__ import annotations

import copy
import json
import pickle
import sys
from datetime import datetime

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from wgrpo.engine.config import ModelConfig
from wgrpo.engine.errors import InputError
from wgrpo.engine.hf import expected_shapes, write_checkpoint
from wgrpo.engine.hf_tokenizer import check_tokenizer_type, load_tokenizer
from wgrpo.engine.tokenizer import PretrainedTokenizer

transformers = pytest.importorskip("transformers")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|start_header_id|>",
            "<|end_header_id|>", "<|eot_id|>"]
CORPUS = ["You are Qwen, created by Alibaba Cloud. You are a helpful assistant.", "What is 2 + 3? It is 5.",
          "system user assistant tool Today Date: Cutting Knowledge December 2023", "a < b & c > d"] * 20

QWEN_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

LLAMA_TEMPLATE = """{{- bos_token }}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- set ns = namespace(turns=0) %}
{%- for message in messages %}
    {%- if message.role not in ['user', 'assistant'] %}
        {{- raise_exception("Conversation roles must be user or assistant, got " + message.role) }}
    {%- endif %}
    {%- set ns.turns = ns.turns + 1 %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}
    {%- if message.role == 'assistant' %}{% generation %}{{ message['content'] | trim }}{% endgeneration %}
    {%- else %}{{ message['content'] | trim }}{% endif %}
    {{- '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

# a template of another shape: loop controls, dict(), tojson of non-ASCII, trim_blocks / lstrip_blocks
PLAIN_TEMPLATE = """{% for message in messages %}
  {% if message.role == 'system' %}{% continue %}{% endif %}
  {% set meta = dict(role=message.role, n=loop.index) %}
[{{ meta | tojson }}] {{ message.content }}{{ eos_token }}
  {% if loop.index > 3 %}{% break %}{% endif %}
{% endfor %}
{% if add_generation_prompt %}>>> {% endif %}"""

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2 + 3?"}],
    [{"role": "system", "content": "You answer in numbers."}, {"role": "user", "content": "What is 2 + 3?"}],
    [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "  It is 5. "},
     {"role": "user", "content": "And a < b & c > d, ☃ 数学?"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello", "reasoning_content": None},
     {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Bye"}, {"role": "user", "content": "x"}],
]

TOOLS = [{"type": "function", "function": {"name": "add", "description": "a < b & c: adds ☃",
                                           "parameters": {"type": "object", "properties": {"a": {"type": "number"}}}}}]
TOOL_CONVERSATION = [
    {"role": "user", "content": "Add 2 and 3"},
    {"role": "assistant", "content": None, "tool_calls": [{"type": "function",
                                                           "function": {"name": "add", "arguments": {"a": 2}}}]},
    {"role": "tool", "content": "5"}, {"role": "tool", "content": "also 5"},
]


def raw_tokenizer(bos_post_processor: bool = False) -> Tokenizer:
    """A small byte-level BPE with the chat special tokens; with `bos_post_processor`, encoding adds
    <|begin_of_text|> in front, as Llama 3's tokenizer.json does."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    if bos_post_processor:
        bos = "<|begin_of_text|>"
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.token_to_id(bos))])
    return tokenizer


def save_hf(directory, template, *, jinja_files: bool = True, bos_post_processor: bool = False, **special):
    """A checkpoint's tokenizer files as transformers writes them; returns the transformers tokenizer."""
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=raw_tokenizer(bos_post_processor),
                                              chat_template=template, **special)
    hf.save_pretrained(directory, save_jinja_files=jinja_files)
    return transformers.AutoTokenizer.from_pretrained(directory)


QWEN_SPECIAL = dict(eos_token="<|im_end|>", pad_token="<|endoftext|>")
LLAMA_SPECIAL = dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")


def assert_same_output(ours: PretrainedTokenizer, theirs, conversation, **options) -> None:
    for add_generation_prompt in (False, True):
        text = ours.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt, **options)
        expected = theirs.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt,
                                              tokenize=False, **options)
        assert text == expected
        ids = ours.apply_chat_template(conversation, add_generation_prompt, tokenize=True, **options)
        assert ids == theirs.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt,
                                                 tokenize=True, return_dict=False, **options)


@pytest.mark.parametrize("jinja_files", [True, False], ids=["chat_template.jinja", "in-tokenizer_config"])
def test_qwen_style_template_renders_as_transformers(tmp_path, jinja_files):
    theirs = save_hf(tmp_path, QWEN_TEMPLATE, jinja_files=jinja_files, **QWEN_SPECIAL)
    assert (tmp_path / "chat_template.jinja").is_file() == jinja_files
    ours = load_tokenizer(tmp_path)
    assert ours.chat_template == theirs.chat_template == QWEN_TEMPLATE
    assert ours.special_tokens == {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    for conversation in CONVERSATIONS:
        assert_same_output(ours, theirs, conversation)
    assert_same_output(ours, theirs, TOOL_CONVERSATION, tools=TOOLS)
    text = ours.apply_chat_template(CONVERSATIONS[0], add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                    "<|im_end|>\n<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n")
    assert '"a < b & c: adds ☃"' in ours.apply_chat_template(CONVERSATIONS[0], tools=TOOLS)  # tojson: no escapes
    ids = ours.apply_chat_template(CONVERSATIONS[0], add_generation_prompt=True, tokenize=True)
    assert ids[0] == ours.token_to_id("<|im_start|>") and ours.decode(ids, skip_special_tokens=False) == text


def test_llama_style_template_with_bos_and_dates(tmp_path):
    theirs = save_hf(tmp_path, LLAMA_TEMPLATE, bos_post_processor=True, **LLAMA_SPECIAL)
    ours = load_tokenizer(tmp_path)
    assert ours.special_tokens == {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
    for conversation in CONVERSATIONS:
        assert_same_output(ours, theirs, conversation, date_string="01 Jan 2025")
    text = ours.apply_chat_template(CONVERSATIONS[0], add_generation_prompt=True, date_string="01 Jan 2025")
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
    assert "Today Date: 01 Jan 2025\n" in text and text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    ids = ours.apply_chat_template(CONVERSATIONS[0], tokenize=True)
    bos = ours.token_to_id("<|begin_of_text|>")
    assert ids.count(bos) == 1 and ours.encode("x").ids[0] == bos  # the template writes the one BOS

    # without date_string the template asks strftime_now for today
    for _ in range(3):  # a render that straddles midnight is tried again
        before = datetime.now().strftime("%d %b %Y")
        text = ours.apply_chat_template(CONVERSATIONS[1])
        expected = theirs.apply_chat_template(CONVERSATIONS[1], tokenize=False)
        if datetime.now().strftime("%d %b %Y") == before:
            break
    assert text == expected and f"Today Date: {before}\n" in text
    assert "You answer in numbers." in text


def test_a_template_of_another_shape(tmp_path):
    theirs = save_hf(tmp_path, PLAIN_TEMPLATE, eos_token="<|endoftext|>")
    ours = load_tokenizer(tmp_path)
    for conversation in CONVERSATIONS:
        assert_same_output(ours, theirs, conversation)
    assert ours.apply_chat_template(CONVERSATIONS[1]) == '[{"role": "user", "n": 2}] What is 2 + 3?<|endoftext|>\n'


@pytest.mark.parametrize("jinja_files", [True, False], ids=["jinja-files", "in-tokenizer_config"])
def test_named_templates(tmp_path, jinja_files):
    templates = {"default": QWEN_TEMPLATE, "plain": PLAIN_TEMPLATE, "tool_use": "TOOLS {{ tools | length }}"}
    theirs = save_hf(tmp_path, templates, jinja_files=jinja_files, **QWEN_SPECIAL)
    assert (tmp_path / "additional_chat_templates" / "plain.jinja").is_file() == jinja_files
    ours = load_tokenizer(tmp_path)
    assert ours.chat_template == theirs.chat_template == templates
    assert_same_output(ours, theirs, CONVERSATIONS[2])
    assert_same_output(ours, theirs, CONVERSATIONS[2], chat_template="plain")
    assert_same_output(ours, theirs, CONVERSATIONS[2], chat_template="{{ messages | length }} messages")
    assert ours.apply_chat_template(CONVERSATIONS[0], tools=TOOLS) == "TOOLS 1"
    assert ours.apply_chat_template(CONVERSATIONS[0], tools=TOOLS) == theirs.apply_chat_template(
        CONVERSATIONS[0], tools=TOOLS, tokenize=False)


def test_special_tokens_as_added_token_objects_and_the_legacy_map(tmp_path):
    save_hf(tmp_path, LLAMA_TEMPLATE, jinja_files=False, **LLAMA_SPECIAL)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["bos_token"] = {"__type": "AddedToken", "content": "<|begin_of_text|>", "lstrip": False,
                           "normalized": False, "rstrip": False, "single_word": False, "special": True}
    del config["eos_token"]  # older checkpoints name some tokens in special_tokens_map.json only
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"eos_token": {"content": "<|eot_id|>"}}))
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
    ours = load_tokenizer(tmp_path)
    assert ours.special_tokens == theirs.special_tokens_map == LLAMA_SPECIAL
    for conversation in CONVERSATIONS[:2]:
        assert_same_output(ours, theirs, conversation, date_string="02 Feb 2025")


def model_config(tokenizer, **overrides) -> ModelConfig:
    fields = dict(architecture="llama", vocab_size=tokenizer.get_vocab_size(), hidden_size=8, num_layers=1,
                  num_heads=2, num_kv_heads=1, intermediate_size=16, tie_word_embeddings=True, eos_token_id=0,
                  pad_token_id=0)
    return ModelConfig(**{**fields, **overrides})


def random_state(config: ModelConfig) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in expected_shapes(config).items()}


@pytest.mark.parametrize("template, special, jinja_files", [
    (QWEN_TEMPLATE, QWEN_SPECIAL, True), (QWEN_TEMPLATE, QWEN_SPECIAL, False), (LLAMA_TEMPLATE, LLAMA_SPECIAL, True),
    ({"default": QWEN_TEMPLATE, "plain": PLAIN_TEMPLATE}, QWEN_SPECIAL, True),
], ids=["qwen-jinja", "qwen-config", "llama-jinja", "named-jinja"])
def test_a_checkpoint_written_back_keeps_the_template(tmp_path, template, special, jinja_files):
    source = tmp_path / "source"
    original = save_hf(source, template, jinja_files=jinja_files, bos_post_processor="bos_token" in special,
                       **special)
    ours = load_tokenizer(source)
    config = model_config(ours, vocab_size=ours.get_vocab_size() + 8)  # eos id 0 is not the tokenizer's eos
    write_checkpoint(tmp_path / "written", config, random_state(config), tokenizer=ours)
    written = tmp_path / "written"
    assert json.loads((written / "tokenizer_config.json").read_text()) == json.loads(
        (source / "tokenizer_config.json").read_text())
    for name in ("chat_template.jinja", "additional_chat_templates/plain.jinja"):
        assert (written / name).is_file() == (source / name).is_file()
        if (source / name).is_file():
            assert (written / name).read_bytes() == (source / name).read_bytes()
    reloaded = transformers.AutoTokenizer.from_pretrained(written)
    assert reloaded.chat_template == original.chat_template
    assert reloaded.special_tokens_map == original.special_tokens_map
    for conversation in CONVERSATIONS:
        assert_same_output(ours, reloaded, conversation, date_string="03 Mar 2025")
        expected = original.apply_chat_template(conversation, tokenize=False, date_string="03 Mar 2025")
        assert reloaded.apply_chat_template(conversation, tokenize=False, date_string="03 Mar 2025") == expected
    again = load_tokenizer(written)
    assert again.chat_template == ours.chat_template and again.init_config == ours.init_config


def test_our_own_tokenizer_keeps_the_generated_config(tmp_path):
    raw = raw_tokenizer()
    config = model_config(raw)
    write_checkpoint(tmp_path / "ckpt", config, random_state(config), tokenizer=raw)
    written = json.loads((tmp_path / "ckpt" / "tokenizer_config.json").read_text())
    assert written["tokenizer_class"] == "PreTrainedTokenizerFast" and written["eos_token"] == "<|endoftext|>"
    assert "chat_template" not in written and not (tmp_path / "ckpt" / "chat_template.jinja").exists()
    loaded = load_tokenizer(tmp_path / "ckpt")
    assert loaded.chat_template is None and loaded.init_config == written
    # written again from the loaded one: the same files
    write_checkpoint(tmp_path / "again", config, random_state(config), tokenizer=loaded)
    assert json.loads((tmp_path / "again" / "tokenizer_config.json").read_text()) == written


def test_a_wrapped_tokenizer_stands_in_for_the_raw_one(tmp_path):
    save_hf(tmp_path, QWEN_TEMPLATE, **QWEN_SPECIAL)
    ours, raw = load_tokenizer(tmp_path), Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    texts = ["What is 2 + 3?", "<|im_start|>user\nhi<|im_end|>", "☃ a < b"]
    assert [e.ids for e in ours.encode_batch(texts)] == [e.ids for e in raw.encode_batch(texts)]
    assert ours.encode(texts[0]).tokens == raw.encode(texts[0]).tokens
    ids = raw.encode(texts[1]).ids
    assert ours.decode(ids, skip_special_tokens=False) == raw.decode(ids, skip_special_tokens=False)
    assert ours.decode_batch([ids]) == raw.decode_batch([ids])
    assert ours.get_vocab(with_added_tokens=True) == raw.get_vocab(with_added_tokens=True)
    assert ours.get_vocab_size() == raw.get_vocab_size() and ours.token_to_id("<|im_end|>") == 2
    assert ours.id_to_token(2) == "<|im_end|>" and ours.to_str() == raw.to_str()
    assert type(ours.model).__name__ == "BPE" and ours.normalizer is None and ours.tokenizer is not raw
    ours.pre_tokenizer = pre_tokenizers.Whitespace()  # set on the wrapped tokenizer
    assert type(ours.tokenizer.pre_tokenizer).__name__ == "Whitespace"
    with pytest.raises(AttributeError, match="chat_template cannot be set"):
        ours.chat_template = "x"
    ours.save(str(tmp_path / "saved.json"))
    assert Tokenizer.from_file(str(tmp_path / "saved.json")).to_str() == ours.to_str()
    for clone in (pickle.loads(pickle.dumps(ours)), copy.deepcopy(ours)):
        assert isinstance(clone, PretrainedTokenizer) and clone.to_str() == ours.to_str()
        assert clone.chat_template == ours.chat_template and clone.init_config == ours.init_config
        assert clone.apply_chat_template(CONVERSATIONS[2]) == ours.apply_chat_template(CONVERSATIONS[2])
    check_tokenizer_type(ours, "op")
    check_tokenizer_type(raw, "op")
    with pytest.raises(TypeError, match="tokenizers.Tokenizer or a PretrainedTokenizer"):
        check_tokenizer_type("tokenizer.json", "write_checkpoint")


# ---- errors ------------------------------------------------------------------------------------------------

@pytest.fixture
def qwen(tmp_path):
    save_hf(tmp_path, QWEN_TEMPLATE, **QWEN_SPECIAL)
    return load_tokenizer(tmp_path)


@pytest.mark.parametrize("messages, message", [
    ("hello", r"messages must be a non-empty list of \{'role': \.\.\., 'content': \.\.\.\} dicts, got str"),
    ([], r"messages must be a non-empty list"),
    ([{"role": "user", "content": "a"}, "b"], r"messages\[1\] must be a \{'role'.* dict, got str"),
    ([{"content": "a"}], r"messages\[0\] needs a 'role' string"),
    ([{"role": 3, "content": "a"}], r"messages\[0\] needs a 'role' string .* got int"),
    ([{"role": "user", "text": "a"}], r"messages\[0\] \(user\) has no 'content'"),
])
def test_messages_that_are_not_role_content_dicts(qwen, messages, message):
    with pytest.raises(InputError, match=rf"^apply_chat_template: {message}"):
        qwen.apply_chat_template(messages)


def test_a_tokenizer_without_a_chat_template(tmp_path):
    raw = raw_tokenizer()
    raw.save(str(tmp_path / "tokenizer.json"))
    for tokenizer in (load_tokenizer(tmp_path), PretrainedTokenizer(raw)):
        assert tokenizer.chat_template is None
        with pytest.raises(InputError, match=r"the tokenizer has no chat template \(tokenizer_config.json has no "
                                             r"chat_template and there is no chat_template.jinja beside it\)$"):
            tokenizer.apply_chat_template(CONVERSATIONS[0])


def test_template_errors_name_the_file(tmp_path, qwen):
    theirs = save_hf(tmp_path / "llama", LLAMA_TEMPLATE, **LLAMA_SPECIAL)
    llama = load_tokenizer(tmp_path / "llama")
    conversation = [{"role": "tool", "content": "5"}]
    jinja2 = pytest.importorskip("jinja2")
    with pytest.raises(jinja2.exceptions.TemplateError, match="roles must be"):  # transformers refuses it too
        theirs.apply_chat_template(conversation, tokenize=False)
    with pytest.raises(InputError, match=rf"^{tmp_path / 'llama' / 'chat_template.jinja'}: the chat template refused "
                                         rf"the conversation: Conversation roles must be user or assistant, got tool$"):
        llama.apply_chat_template(conversation)
    with pytest.raises(InputError, match=r"^chat_template argument: the chat template has a syntax error at line 2"):
        qwen.apply_chat_template(CONVERSATIONS[0], chat_template="ok\n{% if %}")
    with pytest.raises(InputError, match="refused the conversation: .*unsafe"):  # the sandbox
        qwen.apply_chat_template(CONVERSATIONS[0], chat_template="{{ ''.__class__.__mro__ }}")
    with pytest.raises(InputError, match="underscore-prefixed"):
        qwen.apply_chat_template(CONVERSATIONS[0], chat_template="{% set ns = namespace(_x=1) %}")
    with pytest.raises(InputError, match="exclude each other"):
        qwen.apply_chat_template(CONVERSATIONS[0], add_generation_prompt=True, continue_final_message=True)


def test_continue_final_message(qwen, tmp_path):
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
    conversation = [{"role": "user", "content": "2 + 3?"}, {"role": "assistant", "content": "It is "}]
    text = qwen.apply_chat_template(conversation, continue_final_message=True)
    assert text == theirs.apply_chat_template(conversation, continue_final_message=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\nIt is ")


def test_several_templates_without_a_default(tmp_path):
    save_hf(tmp_path, {"a": "A", "b": "B"}, **QWEN_SPECIAL)
    tokenizer = load_tokenizer(tmp_path)
    assert tokenizer.apply_chat_template(CONVERSATIONS[0], chat_template="b") == "B"
    with pytest.raises(InputError, match=r"several chat templates and none is named 'default'; pass chat_template= "
                                         r"one of 'a', 'b'$"):
        tokenizer.apply_chat_template(CONVERSATIONS[0])


def test_bad_tokenizer_files_are_named(tmp_path):
    raw_tokenizer().save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text('{"chat_template": 7}')
    with pytest.raises(InputError, match=rf"^{tmp_path / 'tokenizer_config.json'}: field 'chat_template' must be"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"eos_token": 7}')
    with pytest.raises(InputError, match=rf"^{tmp_path / 'tokenizer_config.json'}: field 'eos_token' must be a token"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("[]")
    with pytest.raises(InputError, match=rf"^{tmp_path / 'tokenizer_config.json'}: expected a JSON object"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{oops")
    with pytest.raises(InputError, match=rf"^{tmp_path / 'tokenizer_config.json'}: not valid JSON"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{}")
    (tmp_path / "chat_template.jinja").write_bytes(b"\xff\xfe")
    with pytest.raises(InputError, match=rf"^{tmp_path / 'chat_template.jinja'}: not UTF-8 text"):
        load_tokenizer(tmp_path)


def test_jinja2_missing_is_named(qwen, monkeypatch):
    monkeypatch.setitem(sys.modules, "jinja2", None)  # what `import jinja2` meets when it is not installed
    with pytest.raises(ImportError, match=r"chat templates need the jinja2 package: pip install 'jinja2>=3.1.6'"):
        qwen.apply_chat_template(CONVERSATIONS[0])
