"""An offline lmms-eval task made of held-out testbed questions, and a copy of the testbed model to run on it.

:func:`write_testbed_task` writes, under one directory: the clips as lossless mp4 files (``libx264rgb`` at
``qp=0``, so decoding gives back the exact frames, at :data:`~tango_prune.testbed.data.FPS` so the decoded
timestamps are the ones the in-process evaluator uses), a JSON-lines dataset, the task YAML
(``dataset_path: json``, loaded with ``--include_path``) with its ``utils.py``, and ``model/``: the shipped
testbed checkpoint with a chat template that passes the user text through unchanged, so the plugin's prompt
(``<video>`` x N, then the task text ``question : ... options : ... answer :``) is token for token the
prompt of :class:`~tango_prune.testbed.model.TestbedProcessor`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


__all__ = ["TASK", "write_task", "write_testbed_task", "testbed_task_paths"]

#: Name of the task (and of its YAML file).
TASK = "tango_testbed"
_CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
_MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors")

_UTILS = '''"""doc_to_* functions of the tango_testbed task (written by tango_prune.integrations.lmms_eval_testbed)."""

import os

from tango_prune.testbed.model import TestbedProcessor

_HERE = os.path.dirname(os.path.abspath(__file__))


def doc_to_visual(doc):
    return [os.path.join(_HERE, doc["video"])]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return TestbedProcessor.prompt(doc["question"], doc["options"])


def process_results(doc, results):
    return {"accuracy": float(results[0].strip() == doc["answer"])}
'''

_YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files: {data}
test_split: train
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: {target}
process_results: !function utils.process_results
generation_kwargs:
  max_new_tokens: {max_new_tokens}
  temperature: 0
  do_sample: false
  num_beams: 1
metric_list:
  - metric: {metric}
    aggregation: mean
    higher_is_better: true
metadata:
  version: 0.0
"""


def write_task(
    directory: str | Path, task: str, rows: list[dict], utils: str, *, metric: str, target: str, max_new_tokens: int
) -> Path:
    """Write an offline generation task: ``{task}.jsonl`` (``rows``), ``utils.py`` (``utils``: the source
    defining ``doc_to_visual``, ``doc_to_text`` and ``process_results``, which returns ``{metric: value}``)
    and ``{task}.yaml`` (``dataset_path: json``, greedy decoding, the mean of ``metric``; ``target`` is the
    doc field holding the reference). Returns ``directory``, the ``--include_path`` of the task."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    data = root / f"{task}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "utils.py").write_text(utils)
    (root / f"{task}.yaml").write_text(
        _YAML.format(
            task=task, data=json.dumps(str(data.resolve())), target=target, max_new_tokens=max_new_tokens, metric=metric
        )
    )
    return root


def write_testbed_task(directory: str | Path, limit: int = 48) -> dict[str, str]:
    """Write the first ``limit`` held-out testbed questions as the lmms-eval task :data:`TASK`.

    Returns ``{"task", "include_path", "pretrained"}``: the task name, the directory to pass as
    ``--include_path`` and the model directory to pass as ``pretrained``. Existing files are overwritten.
    """
    from ..testbed import data as D
    from ..testbed.model import WEIGHTS_DIR, load_processor

    indices = D.heldout_indices(limit)  # validates limit
    root = Path(directory)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in indices:
        s = D.make_sample(D.TEST, i)
        rel = f"videos/{i:04d}.mp4"
        D.write_mp4(s.clip.frames, root / rel, D.FPS, lossless=True)
        rows.append(
            {
                "index": i,
                "video": rel,
                "question": s.question.text,
                "options": list(s.question.options),
                "answer": s.question.answer,
                "qtype": s.question.qtype,
            }
        )
    write_task(root, TASK, rows, _UTILS, metric="accuracy", target="answer", max_new_tokens=1)
    model = root / "model"
    model.mkdir(exist_ok=True)
    for name in _MODEL_FILES:
        shutil.copyfile(WEIGHTS_DIR / name, model / name)
    proc = load_processor()
    proc.tokenizer.chat_template = _CHAT_TEMPLATE
    proc.save_pretrained(model)
    return testbed_task_paths(root)


def testbed_task_paths(directory: str | Path) -> dict[str, str]:
    """What :func:`write_testbed_task` returns for ``directory``, without writing anything."""
    root = Path(directory)
    return {"task": TASK, "include_path": str(root.resolve()), "pretrained": str((root / "model").resolve())}
