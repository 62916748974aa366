"""One rank of the two-process lmms-eval test (run by tests/test_lmms_eval_plugin.py, not collected).

Usage: python _lmms_eval_worker.py MODEL_ARGS TASK INCLUDE_PATH OUT_JSON, with RANK / WORLD_SIZE / LOCAL_RANK /
MASTER_ADDR / MASTER_PORT set as ``accelerate launch`` sets them. Writes the documents this rank answered and,
on rank 0, the gathered sample doc ids, the score and the logged throughput.
"""

import json
import sys

from lmms_eval.evaluator import simple_evaluate
from lmms_eval.models import get_model
from lmms_eval.tasks import TaskManager

model_args, task, include, out = sys.argv[1:5]
lm = get_model("tango_llava_onevision").create_from_arg_string(model_args, {"batch_size": 1})
results = simple_evaluate(
    model=lm,
    tasks=[task],
    limit=None,
    log_samples=True,
    task_manager=TaskManager("WARNING", include_path=include),
    verbosity="WARNING",
)
report = {"rank": lm.rank, "world_size": lm.world_size, "answered": sorted(d for (_, _, d) in lm._stats)}
if results is not None:
    report["samples"] = [s["doc_id"] for s in results["samples"][task]]
    report["accuracy"] = results["results"][task]["accuracy,none"]
    report["throughput"] = results.get("throughput", {})
with open(out, "w") as fh:
    json.dump(report, fh)
