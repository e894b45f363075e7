"""One module per CDK stack, plus reusable constructs."""
