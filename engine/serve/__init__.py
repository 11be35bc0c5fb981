"""`engine serve`: the long-running daemon that editors and batch jobs talk to over editor_bridge.

daemon.py runs the socket loop and the lifecycle, jobs.py the job lanes, journal.py the SQLite journal,
registry.py the stored models, handlers/ one module per kind of request.
"""
