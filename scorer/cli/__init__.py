"""The ``mcd-score`` command line: thin Click adapters over the library, one module a command.

``main`` (the group and its small commands), ``score``, ``report``, ``progress`` (the progress
bar or log lines of a run) and ``errors`` (the one mapping of library errors to exit codes, which
``mcd-export`` uses too). May import the whole library; nothing imports it but ``mcd-export``'s
command, for the error mapping.
"""

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
