"""Design-space exploration: `lowbit sweep` evaluates many design points on Dask and marks the Pareto front.

    spec      the sweep specification (TOML): base design, parameters, workloads, objectives, constraints
    evaluate  one point: resolve the config, simulate (lowbit.sim), cost (lowbit.cost); result cache key
    store     the result cache under lowbit's cache root (resumable sweeps)
    execute   Dask distributed execution (LocalCluster or a running scheduler) and the strategies
    results   the results table (Parquet / CSV) and the non-dominated set
    render    Markdown summary with plots; html: the self-contained interactive page
    cli       `lowbit sweep run|show`

The layer sits above lowbit.cost and below the command line (tests/test_import_graph.py).
"""
