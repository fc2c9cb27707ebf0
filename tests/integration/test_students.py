"""Students trained on silver data, on the CPU: a tiny Llama (the embedded tokenizer, random
weights) fine-tuned on a teacher's silver examples until it has learnt them, saved, loaded
back through the transformers backend in ``fineinstructions`` mode, and run through the
real ``templatize`` and ``instantiate`` stages: it writes the teacher's outputs, which
pass the same validation."""

import json

import pytest

from fineinstructions.config import load_config
from fineinstructions.errors import UserError
from fineinstructions.execution.instantiate import run_instantiate
from fineinstructions.execution.templatize import run_templatize
from fineinstructions.experiments.students import StudentSettings, encode, train_student
from fineinstructions.interface.distill import distill_instantiator, distill_templatizer
from fineinstructions.io import read_rows
from fineinstructions.models.fake import ScriptedLLM
from fineinstructions.records import PairRow, TemplateRow

pytest.importorskip("torch", reason="training needs torch")
pytest.importorskip("transformers", reason="needs fineinstructions[transformers]")
pytestmark = pytest.mark.slow

QUIET = dict(show_progress=False, log=lambda message: None)
QUERIES = ["how do I reset my router password", "best way to store fresh basil"]
TEMPLATES = ["how do I reset my <fi>device</fi> password", "best way to store fresh <fi>a herb</fi>"]
DOCUMENTS = [
    "The tide rises twice a day. The moon pulls the oceans toward it. Coastal towns publish tide tables.",
    "A bicycle chain needs oil every few hundred miles. A dry chain squeaks and wears the gears.",
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A Llama of a few million parameters with the embedded model's tokenizer and chat template."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from fineinstructions.models.embedded import embedded_llm_path

    path = embedded_llm_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=96, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, tie_word_embeddings=True)
    folder = tmp_path_factory.mktemp("tiny-base")
    LlamaForCausalLM(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return str(folder)


LEARN = StudentSettings(max_steps=150, learning_rate=3e-3, batch_size=2, warmup_ratio=0.0, save_steps=1000)


def test_the_loss_is_on_the_assistant_turn_only(tiny_base):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    item = encode([{"role": "user", "content": "a question"}, {"role": "assistant", "content": '{"a": 1}'}], tokenizer)
    learnt = [t for t, label in zip(item["input_ids"], item["labels"], strict=True) if label != -100]
    assert tokenizer.decode(learnt).startswith('{"a": 1}<|im_end|>')
    assert item["labels"][: len(item["labels"]) - len(learnt)] == [-100] * (len(item["labels"]) - len(learnt))


def test_a_templatizer_student_writes_the_teachers_templates_through_the_pipeline(tmp_path, tiny_base):
    queries = write_jsonl(tmp_path / "queries.jsonl", [{"id": f"q{i}", "text": t} for i, t in enumerate(QUERIES)])
    description = "A how-to guide that walks through the steps with examples."
    teacher = ScriptedLLM([json.dumps({"template": t, "compatible_document_description": description}) for t in TEMPLATES])
    distill_templatizer([queries], tmp_path / "silver", load_config(), llm=teacher, **QUIET)
    student = tmp_path / "student"
    result = train_student("templatizer", tmp_path / "silver", tiny_base, student, LEARN, log=lambda m: None)
    assert result["final_loss"] < result["loss_curve"][0]["loss"] / 10
    assert (student / "config.json").exists() and not (student / "checkpoints").exists()
    config = load_config(overrides=[f"{k}={v}" for k, v in result["use"].items()])
    stats = run_templatize([queries], tmp_path / "bank", config, **QUIET)
    made = {t.query_id: t for t in read_rows([tmp_path / "bank"], TemplateRow)}
    assert stats["templatize"]["mode"] == "fineinstructions" and stats["templatize"]["model"].startswith("transformers:")
    assert {q: made[q].template for q in made} == {"q0": TEMPLATES[0], "q1": TEMPLATES[1]}
    assert all(t.compatible_document_description == description for t in made.values())
    # A finished student is kept; one asked for with other settings is refused.
    assert train_student("templatizer", tmp_path / "silver", tiny_base, student, LEARN, log=lambda m: None) == result
    with pytest.raises(UserError, match="trained otherwise"):
        train_student("templatizer", tmp_path / "silver", tiny_base, student, StudentSettings(max_steps=3), log=lambda m: None)


def test_an_instantiator_student_writes_grounded_pairs_through_the_pipeline(tmp_path, tiny_base):
    documents = write_jsonl(tmp_path / "documents.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(DOCUMENTS)])
    bank = write_jsonl(tmp_path / "bank.jsonl", [{"template": "What does <fi>a text</fi> say first?",
                                                  "compatible_document_description": "Any short text."}])
    config = load_config(overrides=["match.threshold=-1", "instantiate.relevance=false", "instantiate.region_window=null"])
    replies = [json.dumps({"instruction": "What does the text say first?",
                           "answer": f"<excerpt>{d.split('. ')[0]}.</excerpt>"}) for d in DOCUMENTS]
    distill_instantiator([documents], [bank], tmp_path / "silver", config, null_share=0.0, llm=ScriptedLLM(replies), **QUIET)
    teacher_pairs = {p.id: p for p in read_rows([tmp_path / "silver" / "work" / "pairs"], PairRow)}
    assert len(teacher_pairs) == 2
    student = tmp_path / "student"
    result = train_student("instantiator", tmp_path / "silver", tiny_base, student, LEARN, log=lambda m: None)
    use = load_config(overrides=["instantiate.relevance=false", "instantiate.region_window=null",
                                 *(f"{k}={v}" for k, v in result["use"].items())])
    stats = run_instantiate([tmp_path / "silver" / "work" / "matches"], [], [documents], tmp_path / "pairs", use, **QUIET)
    made = {p.id: p for p in read_rows([tmp_path / "pairs"], PairRow)}
    assert stats["instantiate"]["mode"] == "fineinstructions" and stats["instantiate"]["out"] == 2
    for pair_id, pair in made.items():
        assert (pair.instruction, pair.answer, pair.excerpt_spans) == (
            teacher_pairs[pair_id].instruction, teacher_pairs[pair_id].answer, teacher_pairs[pair_id].excerpt_spans)


def test_lora_adapters_are_trained_and_merged_into_a_plain_model_folder(tmp_path, tiny_base):
    pytest.importorskip("peft", reason="LoRA needs fineinstructions[train]")
    import torch
    from transformers import AutoModelForCausalLM

    queries = write_jsonl(tmp_path / "queries.jsonl", [{"id": f"q{i}", "text": t} for i, t in enumerate(QUERIES)])
    teacher = ScriptedLLM([json.dumps({"template": t, "compatible_document_description": "A how-to guide with steps."})
                           for t in TEMPLATES])
    distill_templatizer([queries], tmp_path / "silver", load_config(), llm=teacher, **QUIET)
    settings = StudentSettings(max_steps=20, lora=True, lora_rank=4, learning_rate=1e-2, batch_size=2, save_steps=1000)
    result = train_student("templatizer", tmp_path / "silver", tiny_base, tmp_path / "student", settings, log=lambda m: None)
    assert result["final_loss"] < result["loss_curve"][0]["loss"]
    assert not list((tmp_path / "student").glob("adapter_*"))  # merged: no adapter files to load separately
    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "student")
    changed = [name for name, weight in student.state_dict().items()
               if not torch.equal(weight, base.state_dict()[name])]
    assert changed and all("proj" in name for name in changed)  # only the adapted linear layers moved


def test_the_embedded_model_is_a_base_and_its_student_saves_as_a_plain_model(tmp_path):
    queries = write_jsonl(tmp_path / "queries.jsonl", [{"id": f"q{i}", "text": t} for i, t in enumerate(QUERIES)])
    teacher = ScriptedLLM([json.dumps({"template": t, "compatible_document_description": "A how-to guide with steps."})
                           for t in TEMPLATES])
    distill_templatizer([queries], tmp_path / "silver", load_config(), llm=teacher, **QUIET)
    result = train_student("templatizer", tmp_path / "silver", "embedded", tmp_path / "student",
                           StudentSettings(max_steps=2, batch_size=2, save_steps=1000), log=lambda m: None)
    assert result["steps"] == 2 and result["final_loss"] is not None
    saved = json.loads((tmp_path / "student" / "config.json").read_text())
    assert "quantization_config" not in saved  # dequantized GGUF weights, saved as a plain model
    from fineinstructions.models.llm import Request, backend_class

    student = backend_class("transformers")(str(tmp_path / "student"), batch_size=1)
    completion = student.generate([Request.chat(("user", QUERIES[0]), max_tokens=8)])[0]
    assert completion.ok and completion.completion_tokens > 0
