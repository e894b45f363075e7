#!/usr/bin/env python3
"""The CDK app: every stack of FSA Alerts (the stacks arrive with the CDK issue)."""

import aws_cdk as cdk

app = cdk.App()
app.synth()
