"""Running the Lambdas on this machine against a moto server on 127.0.0.1 (never deployed)."""
