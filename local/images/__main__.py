"""``python -m local.images plan | build | push [--dry-run]``: what the Makefile's image verbs run.

Variables (REGISTRY, TAG, BASE_IMAGE, VERSION, REVISION, CREATED) come from the environment,
exactly as `docker buildx bake` reads them.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from lineage.errors import LineageError
from local.images.bake import plan
from local.images.docker import buildx_available, require_engine

ROOT = Path(__file__).resolve().parents[2]


def build(group: str) -> None:
    require_engine()
    if not (ROOT / "wheelhouse" / "deps").is_dir():
        raise LineageError("wheelhouse/deps is missing", "run `make wheels` first")
    if buildx_available():
        command = ["docker", "buildx", "bake", "--load", group]
        print("+", shlex.join(command), flush=True)
        subprocess.run(command, cwd=ROOT, check=True)
        return
    print("docker buildx is not available: building the bake targets with docker build", flush=True)
    for target in plan(ROOT, group_name=group):
        command = target.docker_build()
        print("+", shlex.join(command), flush=True)
        subprocess.run(command, cwd=ROOT, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m local.images", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    planned = commands.add_parser("plan", help="print the docker build commands for the targets")
    built = commands.add_parser("build", help="build the images (bake, or plain docker build)")
    for sub in (planned, built):
        sub.add_argument(
            "--group",
            default="default",
            help='bake group: "default" (the job images) or "stack" (local/compose.yaml)',
        )
    push = commands.add_parser("push", help="push to Amazon ECR (REGISTRY must be set)")
    push.add_argument("--dry-run", action="store_true", help="print what would be done")
    args = parser.parse_args()
    try:
        if args.command == "plan":
            for target in plan(ROOT, group_name=args.group):
                print(shlex.join(target.docker_build()))
        elif args.command == "build":
            build(args.group)
        else:
            from local.images.push import push_images

            push_images(plan(ROOT), dry_run=args.dry_run)
    except LineageError as exc:
        sys.exit(f"error: {exc}")
    except subprocess.CalledProcessError as exc:
        sys.exit(f"error: {shlex.join(exc.cmd)} exited with {exc.returncode}")


if __name__ == "__main__":
    main()
