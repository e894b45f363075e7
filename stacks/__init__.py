"""One module per CDK stack, plus reusable constructs (``stacks.constructs``)."""

import os

# jsii prints a large banner on every run under Node 20 (end of life for jsii, still works).
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
