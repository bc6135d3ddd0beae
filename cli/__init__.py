"""The ``fewintent`` command line (installed as ``fewintent.cli``)."""
