"""Reserved names of the tables and configs."""

FULLMODEL = "fullmodel"  # the whole model at once: a row label, never a unit's name
