"""The FSA index: build it from a postal dataset (``build``), query it in batches (``index``).

Importing this package imports nothing heavy: the query side (``data_builder.index``) needs
only numpy and scikit-learn, the build side also pandas.
"""
