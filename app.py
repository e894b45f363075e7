#!/usr/bin/env python3
"""The CDK app of FSA Alerts. A bad setting or an oversized Lambda stops synth with one line."""

import sys

from stacks.application import build_app
from stacks.constructs.lambda_bundle import BundlingError
from stacks.settings import ConfigError


def main() -> int:
    try:
        app, _stacks = build_app()
        app.synth()
    except (ConfigError, BundlingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
