"""The judge stage's rules, with a scripted backend."""

import dataclasses
import math

import pytest

from fineinstructions.models.fake import ScriptedLLM
from fineinstructions.models.llm import Capabilities, Completion, ErrorKind, TokenLogprob, failed
from fineinstructions.records import PairRow
from fineinstructions.stages.judge import (
    FLOW_GRAMMAR,
    FLOW_REGEX,
    SCORE_LOGPROBS,
    SCORE_SCHEMA,
    Judge,
    expected_score,
    is_flow_judge,
    parse_score,
    score_distribution,
)


def pair(n: int, instruction: str = "how do owls hunt", answer: str = "Owls hunt mostly at night.") -> PairRow:
    return PairRow(
        id=f"p-{n}", document_id="d", template_id="t", query_id="q",
        instruction=instruction, answer=answer, excerpt_ratio=1.0,
    )


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ('{"score": 4}', 4),
        ("<feedback>\nThe answer is on topic.\n</feedback>\n<score>\n5\n</score>", 5),
        ('{"score": "3"}', 3),
        ("Score: 2 because it wanders.", 2),
        ("5", 5),
        ("<score>9</score>", None),
        ("I think it is fine.", None),
        ("", None),
    ],
)
def test_scores_are_read_robustly(text, score):
    assert parse_score(text) == score


def test_pairs_scoring_at_least_min_score_are_kept_with_score_and_provenance():
    llm = ScriptedLLM(['{"score": 5}', '{"score": 4}', '{"score": 3}', '{"score": 1}'])
    result = Judge(llm)([pair(1), pair(2), pair(3), pair(4)])
    assert [p.id for p in result.kept] == ["p-1", "p-2"]
    assert [p.judge_score for p in result.kept] == [5, 4]
    assert {(p.judge_model, p.judge_prompt_version) for p in result.kept} == {("fake:scripted", "judge-v1")}
    assert result.skipped == {"low_score": 2}
    assert result.scores == {5: 1, 4: 1, 3: 1, 1: 1}
    assert [r.reason for r in result.rejects] == ["low_score", "low_score"]


def test_min_score_is_configurable():
    llm = ScriptedLLM(['{"score": 3}', '{"score": 2}'])
    result = Judge(llm, min_score=3)([pair(1), pair(2)])
    assert [p.id for p in result.kept] == ["p-1"]


def test_an_unparseable_judgement_is_counted_and_the_pair_dropped():
    bad = Completion(text='{"score": "great"', error_kind=ErrorKind.INVALID_OUTPUT, error_detail="not JSON")
    llm = ScriptedLLM(["it looks good to me", bad, failed(ErrorKind.BACKEND_ERROR, "HTTP 500")])
    result = Judge(llm)([pair(1), pair(2), pair(3)])
    assert result.kept == []
    assert result.failed == {"unparseable_judgement": 2, "backend_error": 1}
    assert result.rejects[0].raw_output == "it looks good to me"
    assert (result.rejects[2].reason, result.rejects[2].detail) == ("backend_error", "HTTP 500")


def test_the_prompted_format_shows_instruction_and_answer_verbatim():
    llm = ScriptedLLM(['{"score": 5}'])
    braces = pair(1, instruction="what does {x} mean in Python format strings", answer="A {field} is replaced.")
    Judge(llm)([braces])
    [call] = llm.calls
    user = call.messages[-1].content
    assert "what does {x} mean in Python format strings" in user and "A {field} is replaced." in user
    assert call.messages[0].role == "system" and "1 to 5" in call.messages[0].content
    assert call.json_schema is None  # the scripted backend constrains nothing


def test_a_constraining_backend_gets_the_score_schema():
    llm = ScriptedLLM(['{"score": 4}'], capabilities=Capabilities(constrains_json_schema=True))
    Judge(llm)([pair(1)])
    assert llm.calls[0].json_schema == SCORE_SCHEMA


@pytest.mark.parametrize(
    ("declared", "field", "value"),
    [
        (Capabilities(constrains_gbnf=True, constrains_json_schema=True), "grammar", FLOW_GRAMMAR),
        (Capabilities(constrains_regex=True, constrains_json_schema=True), "regex", FLOW_REGEX),
        (Capabilities(), None, None),
    ],
)
def test_the_flow_reply_is_constrained_as_the_backend_can(declared, field, value):
    llm = ScriptedLLM(["<score>5</score>"], model="Flow-Judge-v0.1", capabilities=declared)
    Judge(llm)([pair(1)])
    [call] = llm.calls
    sent = {name: getattr(call, name) for name in ("grammar", "regex", "json_schema") if getattr(call, name) is not None}
    assert sent == ({field: value} if field else {})


def test_flow_judge_models_get_the_flow_judge_format():
    assert is_flow_judge("vllm:flowaicom/Flow-Judge-v0.1")
    assert is_flow_judge("llama_cpp:flow_judge_v0.1-Q4.gguf:123")
    assert not is_flow_judge("llama_cpp:SmolLM2-135M-Instruct.Q4_1.gguf:1")
    llm = ScriptedLLM(["<feedback>\nDirect and complete.\n</feedback>\n<score>\n5\n</score>"], model="flowaicom/Flow-Judge-v0.1")
    judge = Judge(llm)
    assert judge.format == "flow" and judge.prompt_version == "judge-flow-v1"
    result = judge([pair(1)])
    [call] = llm.calls
    assert [m.role for m in call.messages] == ["user"]
    user = call.messages[0].content
    for section in ("<inputs>", "<output>", "<evaluation_criteria>", "<scoring_rubric>", "<feedback>", "<score>"):
        assert section in user
    assert "how do owls hunt" in user.split("<output>")[0] and "Owls hunt mostly at night." in user.split("<output>")[1]
    assert result.kept[0].judge_score == 5


def test_a_reply_cut_at_max_tokens_is_unparseable_never_a_score():
    """A truncated reply may hold a "score … N" that was not the verdict (the model was
    still writing); it must not be read as one."""
    prose = Completion(text="Relevant. A score of 5 would be too generous; the score I give is", finish_reason="length")
    flow = Completion(text="<feedback>\nOn topic. It deserves a score of 4 if", finish_reason="length")
    llm = ScriptedLLM([prose, flow])
    result = Judge(llm)([pair(1), pair(2)])
    assert result.kept == [] and result.scores == {}
    assert result.failed == {"unparseable_judgement": 2}
    assert all("max_tokens" in reject.detail for reject in result.rejects)
    assert [r.raw_output for r in result.rejects] == [prose.text, flow.text]


# -- expected score and the relevance gate -------------------------------------------


def scored(text: str, digit: str, alternatives: dict[str, float]) -> Completion:
    """A judge reply whose score token came with ``alternatives`` (token -> probability)."""
    top = tuple(sorted(((t, math.log(p)) for t, p in alternatives.items()), key=lambda kv: -kv[1]))
    tokens = [TokenLogprob('{"', -0.1), TokenLogprob("score", -0.1), TokenLogprob('":', -0.1), TokenLogprob(" ", -0.2)]
    tokens.append(TokenLogprob(digit, math.log(alternatives[digit]), top))
    tokens.append(TokenLogprob("}", -0.01))
    return Completion(text=text, parsed={"score": int(digit)}, finish_reason="stop", logprobs=tuple(tokens))


LOGPROBS = Capabilities(constrains_json_schema=True, reports_logprobs=True)


def test_the_expected_score_is_the_mean_under_the_score_tokens_renormalised():
    # P(5)=0.4, P(4)=0.2, P(1)=0.2; " 4" merges with "4"; "The" is not a score.
    reply = scored('{"score": 5}', "5", {"5": 0.4, "4": 0.1, " 4": 0.1, "1": 0.2, "The": 0.2})
    distribution = score_distribution(reply, 5)
    assert distribution == pytest.approx({1: 0.25, 2: 0.0, 3: 0.0, 4: 0.25, 5: 0.5})
    assert expected_score(distribution) == pytest.approx(0.25 * 1 + 0.25 * 4 + 0.5 * 5)
    # The reply wrote 5, but the judge's own belief is 3.75: below 4, the pair is dropped.
    result = Judge(ScriptedLLM([reply], capabilities=LOGPROBS))([pair(1)])
    assert result.kept == [] and result.skipped == {"low_score": 1}
    assert result.rejects[0].detail == "scored 3.75 (expected; wrote 5); pairs need at least 4"


def test_the_expected_score_and_the_written_one_are_both_stored():
    reply = scored('{"score": 5}', "5", {"5": 0.9, "4": 0.1})
    result = Judge(ScriptedLLM([reply], capabilities=LOGPROBS), min_score=4.5)([pair(1)])
    (kept,) = result.kept
    assert (kept.judge_score, kept.judge_expected_score) == (5, pytest.approx(4.9))
    assert result.expected_scores == 1


def test_the_judge_asks_for_logprobs_only_where_the_backend_reports_them():
    llm = ScriptedLLM(capabilities=LOGPROBS)
    assert Judge(llm).request(pair(1)).top_logprobs == SCORE_LOGPROBS
    assert Judge(llm, score="argmax").request(pair(1)).top_logprobs == 0
    assert Judge(ScriptedLLM()).request(pair(1)).top_logprobs == 0


def test_without_logprobs_the_written_score_decides():
    result = Judge(ScriptedLLM(['{"score": 4}'], capabilities=LOGPROBS))([pair(1)])
    (kept,) = result.kept
    assert (kept.judge_score, kept.judge_expected_score) == (4, None)
    assert result.expected_scores == 0


def test_the_score_position_is_the_last_token_reading_as_the_written_digit():
    feedback = (TokenLogprob("5", math.log(0.5), (("5", math.log(0.5)), ("1", math.log(0.5)))),)
    reply = scored("<feedback>5 stars</feedback><score>4</score>", "4", {"4": 0.5, "2": 0.5})
    reply = Completion(text=reply.text, logprobs=feedback + reply.logprobs)
    assert expected_score(score_distribution(reply, 4)) == pytest.approx(3.0)
    assert score_distribution(reply, 3) is None


def relevant(n: int, score: float | None) -> PairRow:
    return dataclasses.replace(pair(n), relevance=score)


def test_the_relevance_gate_skips_low_relevance_pairs_before_the_judge_is_asked():
    llm = ScriptedLLM(['{"score": 5}', '{"score": 5}'])
    result = Judge(llm, min_relevance=0.3)([relevant(1, 0.1), relevant(2, 0.5), relevant(3, None)])
    assert len(llm.calls) == 2  # the irrelevant pair cost no judge call
    assert [p.id for p in result.kept] == ["p-2", "p-3"]
    assert result.skipped == {"irrelevant_answer": 1}
    assert result.unscored_relevance == 1
    (reject,) = result.rejects
    assert (reject.input_id, reject.reason) == ("p-1", "irrelevant_answer")
    assert reject.detail == "relevance 0.100; pairs need at least 0.3"


def test_without_a_threshold_the_gate_is_open():
    result = Judge(ScriptedLLM(['{"score": 5}']))([relevant(1, -0.2)])
    assert [p.id for p in result.kept] == ["p-1"]
