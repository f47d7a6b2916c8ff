"""``kubechat demo-model DIR``: build the tiny demo chat model (no download)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kubechat.cli import UsageError


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the command's arguments."""
    parser.add_argument("dir", metavar="DIR", type=Path, help="directory to write the model to")
    parser.add_argument(
        "--force", action="store_true", help="rebuild even if DIR already holds this model"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Build (or reuse) the demo model in ``args.dir`` and print what it holds."""
    # imported here so that argument errors do not wait for torch and transformers
    from .build import DemoModelError, TargetDirError, build_demo_model, read_marker

    try:
        out_dir = build_demo_model(args.dir, force=args.force, progress=not args.quiet)
    except TargetDirError as exc:
        raise UsageError(str(exc)) from exc
    except PermissionError as exc:
        raise UsageError(f"cannot write {args.dir}: {exc.strerror}") from exc
    except DemoModelError as exc:
        print(f"kubechat demo-model: build failed: {exc}", file=sys.stderr)
        return 1
    marker = read_marker(out_dir) or {}
    accuracy = marker.get("accuracy", {})
    print(
        f"demo model ready in {out_dir}: greedy answers {accuracy.get('right')}"
        f"/{accuracy.get('total')} questions right "
        f"(second turns {accuracy.get('second_turn_right')}/{accuracy.get('second_turn_total')}); "
        f"built in {marker.get('build_seconds')} s"
    )
    print(f"seed question: {marker.get('trained_on', {}).get('seed_question')}")
    print(f"answer:        {accuracy.get('seed_answer')}")
    return 0
