"""The ``livedub`` command. Each subcommand imports what it needs only when it runs, so ``--help`` is fast.

Errors caused by the user's input print one line and exit with status 2, with no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from streaming.errors import InputError

EXIT_INPUT_ERROR = 2


def _strength(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"bad strength {text!r}: accepted is a number from 0 to 1")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"bad value {text!r}: accepted is a whole number >= 1")
    return int(text)


def _size(text: str):
    from streaming.source import parse_size

    try:
        return parse_size(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_generator_options(parser: argparse.ArgumentParser, default: str | None = "lite") -> None:
    from model.registry import GENERATORS

    names = ", ".join(f"{n} ({d})" for n, (_, _, d) in GENERATORS.items())
    parser.add_argument("--generator", default=default, metavar="NAME", help=f"one of: {names} (default lite)")
    parser.add_argument("--weights", metavar="DIR", help="weights directory (infinitetalk; see README)")
    parser.add_argument("--device", default=None, help="torch device for model generators (default: cuda if present)")
    parser.add_argument("--generator-option", dest="generator_option", action="append", default=[], type=_key_value,
                        metavar="KEY=VALUE", help="a generator build option, repeatable (infinitetalk: steps=8, "
                                                  "lora=FILE, fp8=true, ...; see README)")
    parser.add_argument("--gpus", metavar="LIST", help="run the generator on one torch.distributed process "
                                                       "group over these GPUs, e.g. 0,1,2,3 (NCCL; infinitetalk)")
    parser.add_argument("--parallel", type=int, metavar="N", help="the same on N CPU ranks (gloo), for trying "
                                                                  "and testing it without GPUs")


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"bad option {text!r}: accepted is KEY=VALUE, e.g. steps=8")
    return key.strip(), value.strip()


def generator_options(args: argparse.Namespace) -> dict:
    options = dict(getattr(args, "generator_option", None) or [])
    if getattr(args, "weights", None):
        options["weights"] = args.weights
    if getattr(args, "device", None):
        options["device"] = args.device
    return options


def _add_dub(commands) -> None:
    parser = commands.add_parser("dub", help="dub a video (or still image) with a speech file, write an mp4",
                                 description="Dub SOURCE (a video or a still image) with the speech in AUDIO. "
                                             "With AUDIO2, two people speak: speaker 1 (AUDIO) is the leftmost "
                                             "face, speaker 2 (AUDIO2) the next; the output's sound mixes both.")
    parser.add_argument("source", help="video or image whose speaker is re-animated")
    parser.add_argument("audio", help="speech: wav, flac, mp3, m4a or a video with sound")
    parser.add_argument("audio2", nargs="?", default=None, help="a second speaker's speech (optional)")
    parser.add_argument("--speaker-order", choices=("left-right", "right-left"), default=None,
                        help="two speakers: speaker 1 is the leftmost face (left-right, default) or the rightmost")
    parser.add_argument("--speaker-faces", metavar="X1,X2", default=None,
                        help="two speakers: pick each speaker's face by its horizontal position in the "
                             "reference, 0 (left) to 1 (right), e.g. 0.2,0.7")
    parser.add_argument("-o", "--output", help="output mp4 (default: SOURCE_dubbed.mp4 here)")
    add_generator_options(parser)
    parser.add_argument("--size", type=_size, default=480, help="480 (default) or 720 bucket, WxH, or source "
                        "(the source's own size, up to 3840x2160; the generator works on a region around the speaker)")
    parser.add_argument("--keyframe-interval", type=_positive_int, default=72, metavar="FRAMES",
                        help="source keyframe spacing; each chunk's reference is the nearest (default 72)")
    parser.add_argument("--color-correction", type=_strength, default=None, metavar="0..1",
                        help="colour transfer towards the reference (default: the generator's)")
    parser.add_argument("--source-end", choices=("hold", "loop"), default="hold",
                        help="when the source is shorter than the speech: hold its last frame or loop it")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--report", metavar="JSON", help="also write a per-chunk report as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=_run_dub)


def _run_dub(args: argparse.Namespace) -> int:
    from streaming.dub import DubSettings, ProgressBar, default_output_name, dub
    from streaming.group import group_layout
    from streaming.media import check_output_path

    # Every output is checked before any work: a bad --report path must not cost a whole dub.
    output = check_output_path(default_output_name(args.source) if args.output is None else args.output)
    if args.report is not None:
        check_output_path(args.report, "report", "report.json")
    options = generator_options(args)
    group = group_layout(args.gpus, args.parallel, args.generator, options)
    settings = DubSettings(generator=args.generator, size=args.size, keyframe_interval=args.keyframe_interval,
                           color_correction=args.color_correction, source_end=args.source_end, seed=args.seed,
                           generator_options=options, speaker_faces=_speaker_faces(args), group=group)
    report = dub(args.source, args.audio, output, settings, progress=None if args.quiet else ProgressBar(),
                 second_audio_path=args.audio2)
    print(report.summary())
    if args.report is not None:
        with open(args.report, "w") as handle:
            json.dump({"output": report.output, "frames": report.frames, "seconds": report.seconds,
                       "chunks": [vars(c) for c in report.chunks]}, handle, indent=1)
    return 0


def _speaker_faces(args: argparse.Namespace):
    """The speakers' faces from --speaker-order / --speaker-faces (None: the default, or one speaker)."""
    from model.speakers import SpeakerError, SpeakerFaces

    if args.speaker_order and args.speaker_faces:
        raise InputError("--speaker-order and --speaker-faces both choose the faces: accepted is one of them")
    if (args.speaker_order or args.speaker_faces) and not args.audio2:
        option = "--speaker-order" if args.speaker_order else "--speaker-faces"
        raise InputError(f"{option} is for two speakers: give a second speech file (AUDIO2) too")
    try:
        if args.speaker_faces:
            return SpeakerFaces.parse_positions(args.speaker_faces)
        return SpeakerFaces.ordered(args.speaker_order) if args.speaker_order else None
    except SpeakerError as exc:
        raise InputError(str(exc)) from None


def _add_demo(commands) -> None:
    parser = commands.add_parser("demo", help="build demo media offline and dub it with the lite generator")
    parser.add_argument("--folder", default="demo", help="where the demo media and result go (default ./demo)")
    parser.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from server.demo import prepare
    from streaming.dub import DubSettings, ProgressBar, dub

    source, speech = prepare(args.folder)
    output = os.path.join(args.folder, "astronaut_dubbed.mp4")
    print(f"demo: dubbing {source} with {speech} (generator lite)")
    report = dub(source, speech, output, DubSettings(), progress=ProgressBar())
    print(report.summary())
    return 0


def _add_serve(commands) -> None:
    from server.serve import add_serve

    add_serve(commands)


def _add_client(commands) -> None:
    from client.live import add_client

    add_client(commands)


def _add_conformance(commands) -> None:
    parser = commands.add_parser("conformance", help="check the InfiniteTalk implementation against fixture sets",
                                 description="Run every InfiniteTalk conformance fixture set in DIR (a set with "
                                             "dit/, encoders/, pipeline/, or a folder of sets); one line per case; "
                                             "exit status 1 if any case exceeds its tolerance.")
    parser.add_argument("folder", metavar="DIR")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="torch CPU threads (default: torch's; with --parallel, per rank: the cores / N)")
    parser.add_argument("--parallel", type=_positive_int, default=1, metavar="N",
                        help="shard the DiT over N gloo ranks on this machine (default 1: not sharded)")
    parser.add_argument("--parallel-mode", choices=("ulysses", "ring", "hybrid"), default="ulysses",
                        help="how the DiT's tokens are split (default ulysses; see the README)")
    parser.set_defaults(run=_run_conformance)


def _run_conformance(args: argparse.Namespace) -> int:
    import torch

    from model.infinitetalk.conformance import run

    if args.parallel > 1:
        from model.infinitetalk.conformance_parallel import run_parallel

        return 1 if run_parallel(args.folder, args.parallel, args.parallel_mode, args.threads) else 0
    if args.threads:
        torch.set_num_threads(args.threads)
    return 1 if run(args.folder).failures else 0


def _add_plan(commands) -> None:
    from server.plan import add_plan

    add_plan(commands)


SUBCOMMANDS = [_add_dub, _add_demo, _add_conformance, _add_serve, _add_client, _add_plan]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livedub", description="Real-time streaming video dubbing.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except InputError as exc:
        print(f"livedub {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print(f"livedub {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
