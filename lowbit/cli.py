from lowbit.sim.cli import main, run  # noqa: F401
