"""The local stack: every vidq service as its own process, plus a mail sink, on one machine.

``make run`` uses it through ``python -m shared.devstack``; the end-to-end tests drive the same
:class:`~shared.devstack.stack.Stack` with their own settings. It starts services as
subprocesses (``python -m gateway`` …) and never imports them.
"""
