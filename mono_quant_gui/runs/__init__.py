"""The Runs pane: every run of the model on screen, shown, saved or compared two at a time.

``RunsPanel`` (runs_dock.py) is the pane, ``RunList`` (run_list.py) its controller,
``CompareDialog`` (compare_view.py) the side-by-side view of two runs, and
run_text.py how runs and deltas read (Qt-free).
"""
