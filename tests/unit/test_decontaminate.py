import gzip
import json

import pytest

from fineinstructions.errors import ConfigError, InputError
from fineinstructions.stages.decontaminate import Decontaminator, load_protected, word_tokens

# 20 tokens.
PROMPT = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
    "clips in May. How many"
)


def test_word_tokens_are_lowercased_unicode_word_runs():
    assert word_tokens("Héllo, WORLD! It's 3.5 km—naïve") == ["héllo", "world", "it", "s", "3", "5", "km", "naïve"]


def test_a_shared_13_token_span_is_contamination():
    decontaminator = Decontaminator(n=13)
    decontaminator.add("gsm8k", PROMPT)
    tokens = word_tokens(PROMPT)
    span = " ".join(tokens[4:17])  # 13 tokens from the middle
    assert decontaminator.check(f"Please solve: {span.upper()}!! Thanks a lot.") == "gsm8k"
    near_span = " ".join(tokens[4:16])  # 12 tokens: no 13-gram in common
    assert decontaminator.check(f"Please solve: {near_span} and tell me why") is None


def test_short_queries_match_only_a_whole_short_prompt():
    decontaminator = Decontaminator(n=13)
    decontaminator.add("trivia", "What is the capital of France?")
    decontaminator.add("gsm8k", PROMPT)
    assert decontaminator.check("what is the CAPITAL of france") == "trivia"
    assert decontaminator.check("What is the capital of Spain?") is None
    assert decontaminator.check("the capital of France") is None  # part of a short prompt
    assert decontaminator.check("sold half as many clips in May") is None  # part of a long prompt
    assert decontaminator.check("???") is None  # no tokens at all


def test_names_the_first_registered_set_whatever_the_order_of_adds():
    decontaminator = Decontaminator(n=3)
    decontaminator.add_set("first")
    decontaminator.add("second", "alpha beta gamma delta")
    decontaminator.add("first", "beta gamma delta epsilon")
    decontaminator.add("second", "one two")
    assert decontaminator.check("x beta gamma delta y") == "first"
    assert decontaminator.check("alpha beta gamma") == "second"
    assert decontaminator.check("one two") == "second"
    assert decontaminator.sets == {"first": 1, "second": 2}


def test_load_protected_reads_txt_jsonl_gz_csv_and_chat_files(tmp_path):
    (tmp_path / "trivia.txt").write_text("\ufeffWhat is the capital of France?\n\n  \nWho wrote Hamlet?\n", "utf-8")
    with gzip.open(tmp_path / "gsm8k.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"question": PROMPT}) + "\n")
    (tmp_path / "mmlu.csv").write_text("question,answer\nWhich planet is known as the red planet?,Mars\n", "utf-8")
    (tmp_path / "chats.jsonl").write_text(
        json.dumps({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Define entropy."}]}) + "\n",
        "utf-8",
    )
    paths = [tmp_path / "trivia.txt", tmp_path / "gsm8k.jsonl.gz", tmp_path / "mmlu.csv", tmp_path / "chats.jsonl"]
    decontaminator = load_protected(paths, text_field="question", n=13)
    assert decontaminator.sets == {"trivia": 2, "gsm8k": 1, "mmlu": 1, "chats": 1}
    assert decontaminator.check("who wrote hamlet") == "trivia"
    assert decontaminator.check("what is the capital of france?") == "trivia"
    assert decontaminator.check(f"Hint please: {PROMPT}") == "gsm8k"
    assert decontaminator.check("Which planet is known as the red planet") == "mmlu"
    assert decontaminator.check("define entropy") == "chats"
    assert decontaminator.check("Be brief.") is None  # system turns are not prompts


def test_a_folder_is_one_set_named_by_the_folder(tmp_path):
    folder = tmp_path / "arc"
    (folder / "shards").mkdir(parents=True)
    (folder / "a.jsonl").write_text(json.dumps({"text": "Why is the sky blue?"}) + "\n", "utf-8")
    (folder / "shards" / "b.txt").write_text("Why do leaves change colour?\n", "utf-8")
    (folder / ".partial.jsonl").write_text(json.dumps({"text": "hidden"}) + "\n", "utf-8")
    decontaminator = load_protected([folder])
    assert decontaminator.sets == {"arc": 2}
    assert decontaminator.check("why do leaves change colour") == "arc"
    assert decontaminator.check("hidden") is None


def test_missing_protected_file_is_a_config_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="nowhere.jsonl: no such file"):
        load_protected([tmp_path / "nowhere.jsonl"])


def test_two_sets_with_one_name_are_refused(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "test.txt").write_text("prompt\n", "utf-8")
    with pytest.raises(ConfigError, match="both named 'test'"):
        load_protected([tmp_path / "a" / "test.txt", tmp_path / "b" / "test.txt"])


def test_a_missing_text_field_says_which_setting_to_change(tmp_path):
    (tmp_path / "bench.jsonl").write_text(json.dumps({"question": "q"}) + "\n", "utf-8")
    with pytest.raises(InputError) as raised:
        load_protected([tmp_path / "bench.jsonl"])
    assert "queries.protected_text_field" in str(raised.value) and "bench.jsonl" in str(raised.value)
