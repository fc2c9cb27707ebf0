"""pretrain: a tiny Llama from scratch on CPU with the transformers Trainer: the loss
falls on a repeated batch, the answer mask reaches the labels, a killed run resumes from
its checkpoint, and two processes train together over gloo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fineinstructions.experiments.pretrain import (
    IGNORE,
    PackedTokens,
    PretrainSettings,
    run_pretrain,
)

pytest.importorskip("transformers")
VOCAB = 96
EOS = 2


def corpus(folder, sequences=64, length=32, answer_from=12):
    """``sequences`` copies of one pair-like sequence: a prompt (mask 0), an answer and
    end-of-sequence (mask 1)."""
    folder.mkdir()
    one = np.arange(10, 10 + length - 1) % VOCAB
    ids = np.concatenate([np.append(one, EOS)] * sequences).astype("<u4")
    mask = np.tile(np.r_[np.zeros(answer_from), np.ones(length - answer_from)], sequences).astype(np.uint8)
    ids.tofile(folder / "input_ids.npy")
    mask.tofile(folder / "label_mask.npy")
    (folder / "meta.json").write_text(json.dumps({"tokens": len(ids), "eos_token_id": EOS, "vocab_size": VOCAB,
                                                  "tokenizer": "test"}))
    return folder


def test_the_answer_mask_reaches_the_labels(tmp_path):
    data = PackedTokens(corpus(tmp_path / "c"), seq_len=32, loss="answer")
    item = data[3]
    assert len(data) == 64 and item["input_ids"].shape == (32,)
    assert (item["labels"][:12] == IGNORE).all() and (item["labels"][12:] == item["input_ids"][12:]).all()
    assert (PackedTokens(tmp_path / "c", seq_len=32, loss="all")[3]["labels"] == item["input_ids"]).all()


def test_the_loss_falls_on_a_repeated_batch(tmp_path):
    settings = PretrainSettings(seq_len=32, tokens=32 * 4 * 40, batch_size=4, loss="all", save_steps=1000,
                                logging_steps=5, learning_rate=1e-2)
    result = run_pretrain(corpus(tmp_path / "c"), tmp_path / "model", settings, log=lambda m: None)
    curve = [point["loss"] for point in result["loss_curve"]]
    assert result["steps"] == 40 and result["training_tokens"] == 32 * 4 * 40
    assert curve[-1] < curve[0] / 3, curve
    assert (tmp_path / "model" / "final" / "config.json").exists()
    saved = json.loads((tmp_path / "model" / "train.json").read_text())
    assert saved["final_loss"] == curve[-1] and saved["tokens_per_s"] > 0


def _command(data, out, steps, *extra):
    return [sys.executable, "-m", "fineinstructions", "pretrain", str(data), "-o", str(out), "--seq-len", "32",
            "--batch-size", "2", "--tokens", str(32 * 2 * steps), "--save-steps", "5", *extra]


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    data, out = corpus(tmp_path / "c", sequences=400), tmp_path / "model"
    # Long enough that a fast machine cannot finish before the kill. Killed as soon as a
    # checkpoint newer than a finished one appears, so most often in the middle of writing
    # it: the resume must skip that half-written one and start from the finished one.
    process = subprocess.Popen(_command(data, out, 2000), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300

    def steps(pattern):
        return {int(p.parent.name.rsplit("-", 1)[-1]) if p.name == "trainer_state.json" else int(p.name.rsplit("-", 1)[-1])
                for p in out.glob(pattern)}

    finished: set[int] = set()
    while time.monotonic() < deadline and process.poll() is None:
        finished = finished or steps("checkpoint-*/trainer_state.json")
        if finished and max(steps("checkpoint-*")) > min(finished):
            break
        time.sleep(0.01)
    assert finished, process.stdout.read() if process.poll() is not None else "no checkpoint"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "train.json").exists()
    again = subprocess.run(_command(data, out, 2000), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming from" in again.stderr
    result = json.loads((out / "train.json").read_text())
    assert result["steps"] == 2000 and result["loss_curve"][-1]["step"] == 2000


@pytest.mark.slow
def test_two_processes_train_together_over_gloo(tmp_path):
    data, out = corpus(tmp_path / "c"), tmp_path / "model"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    done = subprocess.run([*torchrun, "-m", "fineinstructions", *_command(data, out, 8)[3:]], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((out / "train.json").read_text())
    # Each step takes a batch on each process: the budget is reached in half the steps.
    assert result["processes"] == 2 and result["tokens_per_step"] == 32 * 2 * 2 and result["steps"] == 4
