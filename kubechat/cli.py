"""The ``kubechat`` command: one entry point, one subcommand per role.

Subcommand modules are imported only when chosen, so ``kubechat --help`` stays fast and a role
never pays for another role's imports (torch, gradio, kopf). Each module exposes
``configure(parser)`` to declare its flags and ``run(args) -> int`` to do the work.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo-model": ("kubechat.demo_model.command", "build the tiny demo chat model (no download)"),
    "worker": ("kubechat.worker.command", "serve one model with an OpenAI-compatible API"),
    "agent": ("kubechat.agent.command", "the lease beside another engine's server (vLLM)"),
    "gateway": ("kubechat.gateway.command", "one OpenAI-compatible endpoint over live workers"),
    "up": ("kubechat.up", "run ModelDeployment files locally: workers, gateway, UI"),
    "operator": ("kubechat.operator.command", "kopf operator: ModelDeployments to worker pods"),
    "ui": ("kubechat.ui.command", "the Gradio chat page over the live workers"),
}


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class UsageError(Exception):
    """Bad command-line input: printed as a CLI message, exit code 2."""


def configure_logging(level: str) -> None:
    """Log at ``level`` (a subcommand's ``--log-level``, any case) in the commands' one format."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="kubechat", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            modules[name] = importlib.import_module(module_name)
            modules[name].configure(p)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        code = modules[args.command].run(args)
    except UsageError as exc:
        parser.exit(2, f"kubechat {args.command}: error: {exc}\n")
    except KeyboardInterrupt:
        return 130
    return int(code or 0)


if __name__ == "__main__":
    # run through the imported module so that subcommands raising kubechat.cli.UsageError
    # are caught by the same class (``python -m`` would otherwise define it twice)
    from kubechat.cli import main as _main

    sys.exit(_main())
