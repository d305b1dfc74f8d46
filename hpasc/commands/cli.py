"""What every stage's command line shares: the common flags and turning user mistakes into
one-line errors and exit codes. What the flags become at run time is :mod:`hpasc.core.runtime`.

A script builds its parser with :func:`stage_parser`, picks the common flags that mean something
for it (a flag that a stage would ignore is not offered), and hands its work to :func:`run`.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import shlex
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import NoReturn

from hpasc.core import threads
from hpasc.core.errors import InputError, describe_os_error
from hpasc.core.runtime import CommonOptions, Shard, setup_logging, usable_cores
from hpasc.models.precision import PRECISIONS, Precision

EXIT_OK, EXIT_SOME_FAILED, EXIT_INPUT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
COMMON_FLAGS = ("workers", "device", "overwrite", "shard")


def parse_shard(text: str) -> Shard:
    """argparse type for ``K/N`` with 0 <= K < N."""
    try:
        index_text, count_text = text.split("/")
        shard = Shard(int(index_text), int(count_text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N such as 0/4, got {text!r}") from None
    if shard.count < 1 or not 0 <= shard.index < shard.count:
        raise argparse.ArgumentTypeError(f"need 0 <= K < N, got {text!r}")
    return shard


def in_range(low: float | None = None, high: float | None = None, kind: type = float, *, open_low: bool = False,
             open_high: bool = False) -> Callable[[str], float]:
    """argparse type, the one range rule of every numeric flag: a finite number of ``kind`` from
    ``low`` to ``high`` (None: unbounded; an open end excludes its bound). NaN and the infinities
    are refused: no setting means them, and every comparison with NaN is false."""
    word = "an integer" if kind is int else "a number"
    if low is not None and high is not None:
        wanted = f"{word} in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    elif low is not None:
        wanted = f"{word} {'>' if open_low else '>='} {low:g}"
    elif high is not None:
        wanted = f"{word} {'<' if open_high else '<='} {high:g}"
    else:
        wanted = f"a finite {word.split()[-1]}"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {word}, got {text!r}") from None
        inside = math.isfinite(value) and (low is None or (value > low if open_low else value >= low)) \
            and (high is None or (value < high if open_high else value <= high))
        if not inside:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text}")
        return value

    return parse


def at_least(minimum: float, kind: type = int) -> Callable[[str], float]:
    """argparse type: a finite number of ``kind`` that is >= ``minimum``."""
    return in_range(minimum, None, kind)


def class_index(classes: range) -> Callable[[str], int]:
    """argparse type: a class index among ``classes`` (e.g. ``range(18)``: not Negative)."""
    return in_range(classes.start, classes.stop - 1, int)


positive_int = at_least(1)


def _device(text: str) -> str:
    if text in ("auto", "cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")


def _channel_order(text: str) -> tuple[str | None, ...]:
    from hpasc.core.multichannel import parse_channel_order  # image codecs load only when the flag is used

    try:
        return parse_channel_order(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_image_input(parser: argparse.ArgumentParser, what: str = "image folder", metavar: str | None = None) -> None:
    """``-i/--input``, an image folder, and ``--channels`` for its multi-channel files."""
    parser.add_argument("-i", "--input", type=Path, required=True, metavar=metavar,
                        help=f"{what} ({{ID}}_{{red,green,blue,yellow}}.png/.tif/.tif.gz/.jpg, or one "
                             "{ID}.tif / {ID}.ome.tif per image)")
    add_channels_flag(parser)


def add_channels_flag(parser: argparse.ArgumentParser) -> None:
    """``--channels``: the plane order of multi-channel TIFF / OME-TIFF input images."""
    parser.add_argument("--channels", type=_channel_order, default=None, metavar="R,G,B,Y",
                        help="for images stored as one multi-channel TIFF / OME-TIFF each ({ID}.tif, "
                             "{ID}.ome.tif): the channel of each plane in file order (R, G, B, Y; - for a "
                             "plane to leave out), e.g. B,G,R,Y; default: the OME channel names")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults only where they say something (not for switches or empty lists)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        # Identity, not equality: a default of 0 (== False) is worth showing.
        if action.default is None or action.default is False or action.default == [] \
                or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse's parser that names, for a mistyped flag, the flag it most likely meant
    (``--relable``: did you mean --relabel?; ``--tile_size``: --tile-size)."""

    def error(self, message: str) -> NoReturn:
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            hints = []
            for word in message.removeprefix(prefix).split():
                flag = word.split("=", 1)[0]
                close = difflib.get_close_matches(flag.replace("_", "-"), self._option_string_actions, n=1)
                if flag.startswith("--") and close:
                    hints.append(f"{flag}: did you mean {close[0]}?")
            message += f" ({'; '.join(hints)})" if hints else ""
        super().error(message)


def stage_parser(description: str | None, flags: Iterable[str] = ()) -> argparse.ArgumentParser:
    """A parser with ``--log-level`` and ``--no-progress`` plus the chosen common ``flags``."""
    parser = Parser(description=description, formatter_class=_HelpFormatter)
    unknown = set(flags) - set(COMMON_FLAGS)
    if unknown:
        raise ValueError(f"unknown common flags {sorted(unknown)}")
    group = parser.add_argument_group("common options")
    if "workers" in flags:
        group.add_argument("--workers", type=positive_int, default=usable_cores(),
                           help="parallel worker processes or threads")
    if "device" in flags:
        group.add_argument("--device", type=_device, default="auto",
                           help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N")
    if "overwrite" in flags:
        group.add_argument("--overwrite", action="store_true",
                           help="redo items whose output already exists (without it they are skipped)")
    if "shard" in flags:
        group.add_argument("--shard", type=parse_shard, default=Shard(), metavar="K/N",
                           help="process only part K of N (0-based) of the items, e.g. "
                                "$SLURM_ARRAY_TASK_ID/N in a cluster array job")
    group.add_argument("--log-level", default="INFO",
                       choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="logging verbosity")
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def run(stage: Callable[[argparse.Namespace], int | None], args: argparse.Namespace,
        after_interrupt: str = "re-run the same command to continue") -> None:
    """Run a stage function and exit: 0 ok, 1 some items failed or a write failed, 2 unusable
    input, 130 ^C (``interrupted; {after_interrupt}``).

    An :class:`InputError` or an OSError (a full disk, a read-only folder) becomes
    ``error: <message>`` on one line instead of a traceback.
    """
    setup_logging(args.log_level)
    threads.share_cores(0)  # the affinity's cores, where a library would count the machine's
    try:
        status = stage(args) or EXIT_OK
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        status = EXIT_INPUT_ERROR
    except BrokenProcessPool:
        print("error: a worker process died (out of memory?); finished items are kept, "
              "re-run the same command to continue", file=sys.stderr)
        status = EXIT_SOME_FAILED
    except KeyboardInterrupt:
        print(f"interrupted; {after_interrupt}", file=sys.stderr)
        status = EXIT_INTERRUPTED
    except OSError as exc:  # a full disk, a file size limit, a read-only folder: not a bug
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        status = EXIT_SOME_FAILED
    sys.exit(status)


def command_with(argv: Sequence[str], add: Sequence[str] = (), drop: Sequence[str] = ()) -> str:
    """This process's command line as a shell line, with the switches ``drop`` removed and the
    switches ``add`` appended when missing (e.g. the command that resumes an interrupted run)."""
    program = ["python", argv[0]] if argv[0].endswith(".py") else [os.path.basename(argv[0])]
    rest = [a for a in argv[1:] if a not in drop]
    return shlex.join(program + rest + [a for a in add if a not in rest])


Subcommand = tuple[Callable[[], argparse.ArgumentParser], Callable[[argparse.Namespace], int | None], str]
"""(its parser's factory, its stage function, a one-line help)."""


def dispatch(prog: str, description: str, commands: dict[str, Subcommand], argv: Sequence[str] | None) -> None:
    """``prog COMMAND ...``: run the named subcommand's stage on its own parser's arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in commands:
        top = Parser(prog=prog, description=description)
        top.add_argument("command", choices=list(commands),
                         help="; ".join(f"{name}: {entry[2]}" for name, entry in commands.items()))
        top.parse_args(argv[:1])
        return
    make_parser, stage, _ = commands[argv[0]]
    parser = make_parser()
    parser.prog = f"{prog} {argv[0]}"
    run(stage, parser.parse_args(argv[1:]))


def add_precision_flag(parser: argparse.ArgumentParser, what: str = "", compiles: bool = False) -> None:
    """``--precision`` (and ``--no-amp``, its float32 shorthand) for every command that runs a
    network; ``what`` says what it applies to where that is not the whole command; ``compiles``:
    the command trains or scores cells with B0s, which it torch.compiles on CUDA unless
    ``--no-compile``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--precision", choices=PRECISIONS, default=Precision.dtype,
                       help="autocast dtype on CUDA" + (f" for {what}" if what else "") +
                            " (default: %(default)s; float32: no autocast); CPU runs always use float32")
    group.add_argument("--no-amp", dest="precision", action="store_const", const="float32",
                       help="same as --precision float32")
    if compiles:
        parser.add_argument("--no-compile", dest="compile", action="store_false",
                            help="run the cell models eagerly on CUDA (default: torch.compile them, ~2 min the "
                                 "first time, seconds once their kernels are in ~/.cache/hpasc/torch-compile); "
                                 "CPU runs never compile")


def precision_from_args(args: argparse.Namespace) -> Precision:
    """The precision flags as the typed record; a command without ``--no-compile`` compiles nothing."""
    return Precision(args.precision, compile=getattr(args, "compile", False))


def common_options(args: argparse.Namespace) -> CommonOptions:
    """The common flags a parser of :func:`stage_parser` took, as the library's typed options."""
    return CommonOptions(workers=getattr(args, "workers", 1), device=getattr(args, "device", "auto"),
                         overwrite=getattr(args, "overwrite", False), shard=getattr(args, "shard", Shard()),
                         progress=not getattr(args, "no_progress", False))


def add_model_and_dataset(parser: argparse.ArgumentParser, split: bool) -> None:
    """``--checkpoint C`` and ``--dataset D``, as every tool that scores a dataset's cells with a
    trained model takes them (``split``: the tool reads the dataset's split too)."""
    parser.add_argument("--checkpoint", type=Path, required=True, metavar="C",
                        help="a trained .pt checkpoint (train_me.py or finetuner.py output)")
    made = "image_cutter.py, then data_loader.py" if split else "image_cutter.py's output"
    parser.add_argument("--dataset", type=Path, required=True, metavar="D",
                        help=f"cell dataset folder{' with its split' if split else ''} ({made})")
