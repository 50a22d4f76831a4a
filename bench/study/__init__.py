"""Studies: grids of runs, their tables, paired comparisons and figures."""
