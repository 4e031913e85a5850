"""Run cityscapesScripts' pixel-level evaluator on given pairs; print its scores as JSON.

Runs INSIDE cityscapesScripts' own environment (``make .venv-cityscapes``), never bddseg's:
it imports nothing of bddseg. ``tests/test_cityscapes_parity.py`` starts it::

    .venv-cityscapes/bin/python tests/cityscapes_eval_runner.py PAIRS.json
    .venv-cityscapes/bin/python tests/cityscapes_eval_runner.py --labels

``PAIRS.json`` is a list of ``[prediction, ground truth]`` PNG paths, both holding Cityscapes
label ids (0..33), as ``evalPixelLevelSemanticLabeling`` expects (not train ids). The pairs go
straight to its ``evaluateImgLists`` with the module's own default ``args``, except:
instance-level iIoU off (it would read ``*_instanceIds.png``), pixel accuracy off, quiet, no
colours and no JSON file written (``JSONOutput``; its default path is inside the package).
Its progress lines go to stderr, so stdout holds only the JSON:

- ``version``: cityscapesScripts' version;
- ``labels``: its label table, ``[name, id, trainId, ignoreInEval]`` per label;
- ``iou``: ``{name: IoU or null}`` for the 19 evaluated classes (trainId order); null where
  its IoU is NaN (``TP + FP + FN == 0``);
- ``miou``: its "Score Average" (``averageScoreClasses``): the mean of the non-NaN class IoUs;
- ``confusion``: its ``(34, 34)`` matrix, ``[gt label id][pred label id]`` pixel counts.

An error of the evaluator (a missing or unreadable file, sizes that differ) is its own
``ERROR: ...`` line and exit status 255 (``sys.exit(-1)``).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from importlib.metadata import version


def _labels() -> list[list]:
    from cityscapesscripts.helpers.labels import labels

    return [[lb.name, lb.id, lb.trainId, lb.ignoreInEval] for lb in labels]


def evaluate(pairs: list[tuple[str, str]]) -> dict:
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs
    from cityscapesscripts.helpers.labels import labels

    args = cs.args  # the module's defaults; override only what this harness must
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.quiet = True
    args.colorized = False
    args.bold = args.nocol = ""
    preds = [p for p, _ in pairs]
    gts = [g for _, g in pairs]
    with contextlib.redirect_stdout(sys.stderr):  # its error lines and any stray print
        result = cs.evaluateImgLists(preds, gts, args)

    def num(v: float) -> float | None:
        return None if math.isnan(v) else float(v)

    evaluated = sorted(
        (lb for lb in labels if not lb.ignoreInEval and lb.id >= 0), key=lambda lb: lb.trainId
    )
    return {
        "iou": {lb.name: num(result["classScores"][lb.name]) for lb in evaluated},
        "miou": num(result["averageScoreClasses"]),
        "confusion": result["confMatrix"],
    }


def main(argv: list[str]) -> int:
    out = {"version": version("cityscapesscripts"), "labels": _labels()}
    if argv != ["--labels"]:
        if len(argv) != 1:
            print(__doc__, file=sys.stderr)
            return 2
        with open(argv[0], encoding="utf-8") as f:
            out.update(evaluate([(p, g) for p, g in json.load(f)]))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
