"""Benchmark of Swinv2Backbone beside its peers (``tools/benchmark.py`` is the command line):
:mod:`.measure` times and sizes one run and records the machine, :mod:`.cases` runs one case of
all implementations alike, :mod:`.report` renders the results."""
