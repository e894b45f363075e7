"""Feed sources, one module per kind, behind one interface: ``fetch(cursor) -> Fetch``.

A source raises ``SourceError`` (one line, naming the source) for anything that stops the
fetch; the run isolates it so other sources go on and this source's cursor stays put.
"""
