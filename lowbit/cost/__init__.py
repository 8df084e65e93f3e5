"""Cost layer: area, energy and power of a design from simulator activity (lowbit.sim) and synthesised
netlists (lowbit.rtl), and the reports that compare designs with each other, the papers and the GPU baseline."""
