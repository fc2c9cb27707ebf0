"""``fineinstructions experiment``: the paper's controlled comparison in one resumable command.

    EXP_DIR/
      protected/           the evaluation set's prompts, which the queries are decontaminated against
      run/                 the pipeline's run (its dataset is audited)
      tokens-pairs/  tokens-control/      the two token corpora, equal in tokens
      model-pairs/   model-control/       the two models, trained with identical settings
      eval/                evaluation.json, answers.jsonl, judgements.jsonl
      experiment.json  report.html

Each step is skipped when its output is complete, and the pipeline and pre-training resume
inside themselves, so the command run again after a kill continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import html
import json
from pathlib import Path
from typing import Callable, Sequence

from fineinstructions.config import Config
from fineinstructions.errors import UserError
from fineinstructions.io import write_json
from fineinstructions.io.writers import atomic_write

ARMS = ("pairs", "control")


def _protected(eval_set: Path, folder: Path) -> Path:
    """The evaluation set's prompts and references, one per line, for decontamination."""
    from fineinstructions.experiments.eval_sets import read_eval_set

    items = read_eval_set(eval_set)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{items[0].set_name or 'eval'}.txt"
    lines = [" ".join(text.split()) for item in items for text in (*item.turns, *(item.references or ()))]
    atomic_write(path, lambda tmp: tmp.write_text("\n".join(line for line in lines if line) + "\n", encoding="utf-8"))
    return path


def run_experiment(
    query_paths: Sequence[str | Path], document_paths: Sequence[str | Path], eval_set: str | Path, output: str | Path,
    config: Config, settings, *, templates: Sequence[str | Path] = (), limit: int | None = None, show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Run (or resume) the whole experiment into ``output``; returns ``experiment.json``.
    The bank is made from ``query_paths``, or is ``templates``, or both (as in ``run``)."""
    from fineinstructions.execution.pipeline import run_pipeline
    from fineinstructions.experiments.audit import run_audit
    from fineinstructions.experiments.evaluate import run_evaluate
    from fineinstructions.experiments.export import export_control, export_dataset
    from fineinstructions.experiments.pretrain import run_pretrain
    from fineinstructions.interface.report import write_report

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    protected = _protected(Path(eval_set), out / "protected")
    config = config.model_copy(update={"queries": config.queries.model_copy(
        update={"protected": (*config.queries.protected, str(protected)), "protected_text_field": "text"})})
    log("experiment: 1/5 the pipeline (queries decontaminated against the evaluation set)")
    stats = run_pipeline(query_paths, document_paths, out / "run", config, templates=templates, show_progress=show_progress, log=log,
                         audit=lambda dataset: run_audit(dataset, document_paths, config, log=log), report=write_report)
    dataset = out / "run" / "dataset"
    if not stats["funnel"]["packed"]:
        raise UserError(f"the pipeline kept no pair (see {out / 'run' / 'report.html'}); there is nothing to train on")
    tokenizer = config.pack.tokenizer
    log("experiment: 2/5 the token corpora (pairs, and the same documents as plain text, token for token)")
    corpora = {"pairs": out / "tokens-pairs", "control": out / "tokens-control"}
    if not (corpora["pairs"] / "export.json").exists():
        export_dataset(dataset, corpora["pairs"], format="tokens", tokenizer=tokenizer, overwrite=True, log=log)
    if not (corpora["control"] / "export.json").exists():
        export_control(dataset, document_paths, corpora["control"], format="tokens", tokenizer=tokenizer, overwrite=True, log=log)
    tokens = {arm: json.loads((corpora[arm] / "meta.json").read_text(encoding="utf-8"))["tokens"] for arm in ARMS}
    if tokens["pairs"] != tokens["control"]:
        raise UserError(f"the corpora differ in tokens ({tokens}); export them again")
    settings = dataclasses.replace(settings, tokens=settings.tokens or tokens["pairs"])
    log("experiment: 3/5 pre-training both models with identical settings")
    trained = {}
    for arm in ARMS:
        folder = out / f"model-{arm}"
        done = folder / "train.json"
        trained[arm] = (json.loads(done.read_text(encoding="utf-8")) if done.exists()
                        else run_pretrain(corpora[arm], folder, settings, log=log))
    log("experiment: 4/5 evaluating both")
    evaluation_file = out / "eval" / "evaluation.json"
    evaluation = (json.loads(evaluation_file.read_text(encoding="utf-8")) if evaluation_file.exists()
                  else run_evaluate([out / "model-pairs", out / "model-control"], eval_set, out / "eval", config,
                                    limit=limit, log=log))
    log("experiment: 5/5 the report")
    audit = json.loads((dataset / "audit.json").read_text(encoding="utf-8"))
    result = {
        "eval_set": str(eval_set), "documents": stats["funnel"]["documents"], "pairs": stats["funnel"]["packed"],
        "audit": {"passed": audit["passed"], "failed_hard_rules": audit["failed_hard_rules"]},
        "held_equal": {**dataclasses.asdict(settings), "tokenizer": tokenizer, "architecture": "Llama"},
        "arms": {
            arm: {
                "corpus_tokens": tokens[arm], "training_tokens": trained[arm]["training_tokens"],
                "steps": trained[arm]["steps"], "final_loss": trained[arm]["final_loss"],
                "parameters": trained[arm]["parameters"],
                **{k: v for k, v in evaluation["models"][str(out / f"model-{arm}")].items() if k != "parameters"},
            }
            for arm in ARMS
        },
        "head_to_head": evaluation.get("head_to_head"),
    }
    write_json(result, out / "experiment.json")
    write_experiment_report(out, result, trained)
    return result


def write_experiment_report(out: Path, result: dict, trained: dict) -> Path:
    """``report.html``: both loss curves, the figures, answers side by side, the settings."""
    from fineinstructions.interface.report import html_table, line_chart

    curves = "".join(
        line_chart(f"Training loss: {arm}", [(int(p["step"]), float(p["loss"])) for p in trained[arm]["loss_curve"]],
              xlabel="step", ylabel="loss")
        for arm in ARMS
    )
    rows = [(arm, a["corpus_tokens"], a["training_tokens"], a["steps"], a["final_loss"], a.get("reference_nll"),
             (a.get("grade") or {}).get("mean")) for arm, a in result["arms"].items()]
    h2h = result.get("head_to_head") or {}
    answers = [json.loads(line) for line in (out / "eval" / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    by_item: dict[str, dict] = {}
    for answer in answers:
        by_item.setdefault(answer["item"], {"prompt": answer["prompt"]})[Path(answer["model"]).name] = answer["answer"]
    samples = "".join(
        f'<div class="pair"><div><p><b>{html.escape(item["prompt"])}</b></p><p class="meta">pairs model</p>'
        f'<pre>{html.escape(item.get("model-pairs", ""))}</pre></div><div><p>&nbsp;</p><p class="meta">control model</p>'
        f'<pre>{html.escape(item.get("model-control", ""))}</pre></div></div>'
        for item in list(by_item.values())[:6]
    )
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>fineinstructions experiment</title>
<style>body{{font:15px/1.5 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ddd;padding:3px 8px}}.meta{{color:#666}}
.pair{{display:grid;grid-template-columns:1fr 1fr;gap:1em;border:1px solid #ddd;padding:.8em;margin:1em 0}}
pre{{white-space:pre-wrap;font:inherit}}.charts{{display:flex;gap:1.5em;flex-wrap:wrap}}</style></head><body>
<h1>Controlled experiment: FineInstructions pairs against the same documents as plain text</h1>
<p><b>Read this first:</b> with the embedded models and a tiny model trained on a small corpus, this run shows
that the harness works end to end; it says nothing about what the method is worth. The paper's comparison
used 1.8B-parameter models trained on about 300B tokens.</p>
<p>{result['pairs']} pairs from {result['documents']} documents · audit {'passed' if result['audit']['passed'] else 'FAILED'}</p>
<h2>Figures</h2>
{html_table(rows, ["arm", "corpus tokens", "training tokens", "steps", "final loss", "reference NLL / token", "mean grade 1-10"])}
<p>Head-to-head (pairs model first): win rate {h2h.get('win_rate')} (95% CI {h2h.get('ci95')}) over {h2h.get('items')} prompts,
judged in both orders.</p>
<h2>Loss curves</h2><div class="charts">{curves}</div>
<h2>Settings held equal</h2>
{html_table([(k, str(v)) for k, v in result['held_equal'].items()], ["setting", "value"])}
<h2>Sample answers</h2>{samples}
</body></html>
"""
    return atomic_write(out / "report.html", lambda tmp: tmp.write_text(page, encoding="utf-8"))
