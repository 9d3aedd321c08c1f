"""Results: the tidy tables, categories, the graded criticality grid, and the figures drawn from tables alone."""
