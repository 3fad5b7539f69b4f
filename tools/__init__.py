"""The `wgrpo` command line and the benchmarks."""
