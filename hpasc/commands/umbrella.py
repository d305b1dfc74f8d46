"""hpasc: every stage and tool of the pipeline behind one command.

``hpasc NAME ARGS`` is ``hpasc-NAME ARGS`` (the same parser, help and exit codes); ``hpasc --help``
lists them, the stages in pipeline order."""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Sequence

# (name, module of hpasc.commands, one line), the stages in the order a run goes through them.
STAGES: tuple[tuple[str, str, str], ...] = (
    ("download", "download", "public-HPA images as 16-bit PNGs (download_publichpa.py)"),
    ("segment", "segment", "cell and nucleus masks, HPA's networks or classical (segmentator.py)"),
    ("cut", "cut", "every cell a tile and a row of a cell store (image_cutter.py)"),
    ("split", "split", "image-level, label-stratified folds (data_loader.py)"),
    ("train", "train", "train or resume an EfficientNet / timm model (train_me.py)"),
    ("pseudo-label", "pseudo_label", "pseudo-label folders from a trained model"),
    ("finetune", "finetune", "one fine-tuning pass on relabelled cells (finetuner.py)"),
    ("cell-eval", "cell_eval", "score a model against cell-level truth"),
    ("infer", "infer", "images to a submission and per-cell table (infer.py)"),
    ("evaluate", "evaluate", "the competition's mAP of a submission against truth masks"),
    ("check-submission", "check_submission", "check a submission's format, ids and masks"),
    ("kaggle", "kaggle", "the offline bundle for a Kaggle notebook"),
)
TOOLS: tuple[tuple[str, str, str], ...] = (
    ("synthetic", "synthetic", "synthetic HPA-like images with known masks and labels"),
    ("mirror", "mirror", "an offline mirror of public-HPA files"),
    ("agreement", "agreement", "agreement of two folders of cell masks"),
    ("cellstore", "cellstore", "merge, inspect or export a cell store"),
    ("labels", "labels", "inspect, remap or fetch label folders"),
    ("label-tool", "label_tool", "the relabeling tool in a browser"),
    ("gradcam", "gradcam", "Grad-CAM heatmaps of a model's cells"),
    ("explore", "explore", "figures exploring a cell dataset"),
    ("report", "report", "an HTML report of a run's per-cell table"),
)
COMMANDS = {name: module for name, module, _ in (*STAGES, *TOOLS)}


def usage() -> str:
    def rows(entries: tuple[tuple[str, str, str], ...]) -> str:
        return "\n".join(f"  {name:<18}{text}" for name, _, text in entries)
    return (f"usage: hpasc COMMAND [ARGS ...]\n\n{__doc__.splitlines()[0]}\n\n"
            f"stages, in pipeline order:\n{rows(STAGES)}\n\ntools:\n{rows(TOOLS)}\n\n"
            "hpasc COMMAND --help: that command's options (the same as hpasc-COMMAND --help)")


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if argv else 2)
    name = argv[0]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        print(f"hpasc: error: unknown command {name!r}{hint}; hpasc --help lists them", file=sys.stderr)
        sys.exit(2)
    sys.argv[0] = f"hpasc-{name}"  # its usage lines and messages name the command as hpasc-NAME
    importlib.import_module(f"hpasc.commands.{COMMANDS[name]}").main(argv[1:])
