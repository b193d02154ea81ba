"""``driftline demo``: the embedded stack, simulated traffic with scripted incidents, live view.

:func:`driftline.demo.run.run_demo` does the work; :mod:`.timeline` holds the story,
:mod:`.receiver` the local PagerDuty stand-in, :mod:`.watch` and :mod:`.view` the live view.
"""
