"""Expected answers: what a platform's numbers must be (``datafactory expect``).

:mod:`.questions` (what a pack asks), :mod:`.answers` (a question answered a block at a time),
:mod:`.fates` (what chaos did to each event, as a platform sees it), :mod:`.run` (a run's
events made again and every question answered), :mod:`.command` (the command).
"""
