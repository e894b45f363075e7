"""Constructs used by more than one stack."""
