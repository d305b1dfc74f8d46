"""The flags train_me.py and finetuner.py share, and the calls their ``main`` makes: arguments
become a :class:`~hpasc.stages.train.stage.TrainConfig` (or finetuning settings) and a execution."""

from __future__ import annotations

import argparse
from pathlib import Path

from hpasc.commands import cli
from hpasc.core.errors import InputError
from hpasc.core.runtime import write_manifest
from hpasc.models.checkpoint import load_checkpoint
from hpasc.labels.formats import CHOICES as LABEL_FORMATS
from hpasc.models.registry import architecture, short_name
from hpasc.stages.train import distributed
from hpasc.stages.train.augment import AugmentSettings
from hpasc.stages.train.config import Execution, FinetuneConfig, RunRecord, TrainConfig
from hpasc.stages.train.finetune import finetune
from hpasc.stages.train.label_sources import LabelSources
from hpasc.stages.train.losses import LOSSES
from hpasc.stages.train.stage import train


def add_shared_flags(parser: argparse.ArgumentParser, defaults_from: str | None = None) -> None:
    """``-c``, ``-b``, ``-r``/``-p``, label folders, ``--precision`` and ``--no-compile``. With ``defaults_from`` (the
    finetuner), ``-c`` and the augmentation default to that checkpoint's own."""
    inherited = f" (default: {defaults_from}'s own)" if defaults_from else ""
    parser.add_argument("-c", "--criterion", choices=sorted(LOSSES), default=None if defaults_from else TrainConfig.loss,
                        help="loss on the soft targets: bce, or focal (alpha 1, gamma 2)" + inherited)
    parser.add_argument("-b", "--batch-size", type=cli.positive_int, default=TrainConfig.batch_size,
                        help="cells per batch (per process under torchrun)")
    augment = parser.add_mutually_exclusive_group()
    augment.add_argument("-r", "--random-resize", action="store_true",
                         help="RandomResize (p 0.4: to a random 256-384 px and back, scaled to the tile "
                              "size) on top of flips and rotations" + inherited)
    augment.add_argument("-p", "--random-resize-and-pad", action="store_true",
                         help="RandomResize (p 0.3) + RandomPad (p 0.3: each side 0-200 px, then back to "
                              "the tile size) on top of flips and rotations" + inherited)
    augment.add_argument("--plain-augment", action="store_true",
                         help="flips and rotations only" + (inherited and " (overrides the checkpoint's)"))
    parser.add_argument("--relabel", type=Path, action="append", default=[], metavar="DIR",
                        help="manual relabel folder of {class}.txt files ('CELL_ID SCORE', score 0-5), or "
                             "the 4th place's published folder (see --label-format); repeatable, later "
                             "folders win")
    parser.add_argument("--pseudo", type=Path, action="append", default=[], metavar="DIR",
                        help="pseudo-label folder (hpasc-pseudo-label); manual relabels win "
                             "over it; repeatable")
    if not defaults_from:  # a fine-tuned model keeps the score map its checkpoint was trained with
        parser.add_argument("--score-map", type=Path, default=None, metavar="YAML",
                            help="score -> soft label map ({default: {1: 0.0, ...}, classes: "
                                 "{11: {3: 0.8}}}); default 0:0.0 1:0.0 2:0.2 3:0.7 4:0.9 5:1.0")
        parser.add_argument("--label-format", "--label-recipe", dest="label_format", choices=LABEL_FORMATS,
                            default=LabelSources.label_format,
                            help="how a --relabel folder is read: spec ({class}.txt files), 4th-place (their "
                                 "folder: relabel/, validation/, auto-relabel*/ and their rules, maps and "
                                 "validation set), auto (their layout is recognised; default)")
        parser.add_argument("--allow-foreign-ids", action="store_true",
                            help="apply label ids made on another segmentation than the dataset's (they "
                                 "name other cells there; see hpasc-labels remap)")
        parser.add_argument("--public-table", type=Path, default=None, metavar="CSV",
                            help="the public-HPA table (kaggle_2021.tsv), for the 4th place's class-6 rule "
                                 "that works per antibody")
    cli.add_precision_flag(parser, compiles=True)


def augment_from_args(args: argparse.Namespace) -> AugmentSettings | None:
    """The augmentation the flags ask for; None when none was given (keep a default)."""
    if args.random_resize or args.random_resize_and_pad or args.plain_augment:
        return AugmentSettings.from_flags(args.random_resize, args.random_resize_and_pad)
    return None


def execution_from_args(args: argparse.Namespace) -> Execution:
    options = cli.common_options(args)
    return Execution(options=options, process=distributed.start(options.device),
                   resume=getattr(args, "resume", False), precision=cli.precision_from_args(args),
                   pretrained_url=getattr(args, "pretrained_url", None))


def default_run_name(arch: str, loss: str) -> str:
    """``b0-bce`` for efficientnet-b0 with BCE, as the 4th place named its runs."""
    return f"{short_name(arch)}-{loss}"


def arch_name(text: str) -> str:
    """argparse type: a registered architecture or ``timm:NAME``."""
    try:
        return architecture(text).name
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        dataset=args.input, save_dir=args.save, name=args.name or default_run_name(args.arch, args.criterion),
        arch=args.arch, loss=args.criterion, batch_size=args.batch_size, epochs=args.epochs,
        epoch_size=args.epoch_size, lr=args.lr, min_lr=args.min_lr,
        augment=augment_from_args(args) or AugmentSettings(), tile_size=args.tile_size,
        pretrained=args.pretrained,
        labels=LabelSources(tuple(args.relabel), tuple(args.pseudo), args.score_map, args.label_format,
                            args.public_table, args.allow_foreign_ids),
        sampling=args.sampling, negative_head=args.negative_head, seed=args.seed, patience=args.patience)


def train_entry(args: argparse.Namespace) -> int:
    """train_me.py: train (or resume) one run."""
    execution = execution_from_args(args)
    try:
        config = train_config_from_args(args)
        last = train(config, execution)
        if execution.process.is_main and last is not None:
            write_manifest(config.save_dir, "train_me", vars(args), {"run": config.name, "last_checkpoint": str(last)},
                           RunRecord(config).to_dict())
    finally:
        distributed.stop(execution.process)
    return cli.EXIT_OK


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    """train_me.py's own flags (besides the shared ones)."""
    parser.add_argument("-i", "--input", type=Path, default=Path("dataset"), metavar="DATASET",
                        help="cell dataset folder (image_cutter.py output) with its split (data_loader.py)")
    parser.add_argument("-s", "--save", type=Path, default=Path("models"), metavar="DIR",
                        help="folder for the checkpoints {NAME}-{EPOCH}.pt and {NAME}-metrics.csv")
    parser.add_argument("-n", "--name", default=None,
                        help="run name (default: {arch without 'efficientnet-'}-{criterion}, e.g. b0-bce)")
    parser.add_argument("--arch", type=arch_name, default=TrainConfig.arch,
                        help="network architecture: efficientnet-b0 ... efficientnet-b4, or timm:NAME for "
                             "any timm model (e.g. timm:inception_v3, timm:convnext_tiny)")
    parser.add_argument("--epochs", type=cli.positive_int, default=TrainConfig.epochs, help="epochs to train")
    parser.add_argument("--epoch-size", type=cli.positive_int, default=TrainConfig.epoch_size,
                        help="cells sampled per epoch (per-class quotas, see --sampling)")
    parser.add_argument("--lr", type=cli.at_least(0.0, float), default=TrainConfig.lr,
                        help="Adam's initial learning rate")
    parser.add_argument("--min-lr", type=cli.at_least(0.0, float), default=TrainConfig.min_lr,
                        help="the learning rate cosine annealing reaches at the last epoch")
    parser.add_argument("--tile-size", type=cli.at_least(16), default=TrainConfig.tile_size,
                        help="train at this tile size (default: the architecture's, at most the "
                             "dataset's tiles: 512 for B0, 260 for B2)")
    parser.add_argument("--pretrained", default=TrainConfig.pretrained, metavar="auto|none|PATH",
                        help="ImageNet weights: auto (the cache, else a download; from scratch with a "
                             "warning when neither works), none, or a weights file")
    parser.add_argument("--pretrained-url", default=None, metavar="URL",
                        help="base URL of a mirror holding efficientnet-pytorch's weight files")
    parser.add_argument("--sampling", type=Path, default=None, metavar="YAML",
                        help="per-class sampling quotas (default: the 4th-place quotas, "
                             "hpasc/stages/train/sampling.yaml)")
    parser.add_argument("--negative-head", action="store_true",
                        help="19 outputs with a Negative output, instead of Negative = 1 - max")
    parser.add_argument("--seed", type=cli.at_least(0), default=TrainConfig.seed,
                        help="seed of the initial weights, the epoch samples and the augmentation")
    parser.add_argument("--patience", type=cli.at_least(0), default=TrainConfig.patience,
                        help="stop after this many epochs without a better validation mAP (0: never)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the run's last checkpoint in --save (start if there is none)")


def add_finetune_flags(parser: argparse.ArgumentParser) -> None:
    """finetuner.py's own flags (besides the shared ones)."""
    parser.add_argument("-l", "--load", type=Path, required=True, metavar="CHECKPOINT",
                        help="the trained checkpoint to fine-tune (train_me.py output)")
    parser.add_argument("-s", "--save", type=Path, default=Path("finetuned"), metavar="DIR",
                        help="folder for the result, written as DIR/{the checkpoint's file name}")
    parser.add_argument("-i", "--input", type=Path, default=None, metavar="DATASET",
                        help="cell dataset with its split (default: the one the checkpoint was trained on)")
    parser.add_argument("--relabel-repeats", type=cli.positive_int, default=FinetuneConfig.relabel_repeats,
                        help="how often each relabelled validation cell is seen (other cells: once)")
    parser.add_argument("--lr", type=cli.at_least(0.0, float), default=FinetuneConfig.lr,
                        help="Adam's learning rate (constant over the pass)")
    parser.add_argument("--seed", type=cli.at_least(0), default=FinetuneConfig.seed,
                        help="seed of the cell order and the augmentation")


def finetune_entry(args: argparse.Namespace) -> int:
    """finetuner.py: one fine-tuning pass over a checkpoint's validation cells."""
    execution = execution_from_args(args)
    try:
        config = FinetuneConfig(
            checkpoint=args.load, save_dir=args.save, batch_size=args.batch_size, dataset=args.input,
            loss=args.criterion, augment=augment_from_args(args), relabel=tuple(args.relabel),
            pseudo=tuple(args.pseudo), relabel_repeats=args.relabel_repeats, lr=args.lr, seed=args.seed)
        written = finetune(config, execution)
        if execution.process.is_main and written is not None:
            write_manifest(config.save_dir, "finetuner", vars(args), {"checkpoint": str(written)},
                           load_checkpoint(written)["args"])
    finally:
        distributed.stop(execution.process)
    return cli.EXIT_OK
