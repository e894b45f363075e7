"""Lambda function code: one package per function, plus what they share."""
